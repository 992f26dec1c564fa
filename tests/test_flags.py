"""pass-flags lists every --pass-* flag of the plugin, each with help."""
import argparse

from fairseq import options

from pass_fairseq.cli import pass_flags as flags


def test_every_training_pass_flag_is_listed_with_help():
    # the flags fairseq-train really adds for the plugin's components
    parser = options.get_training_parser()
    args = ["data", "--task", "translation_pass", "--arch", "transformer_pass_iwslt",
            "--criterion", "pass_label_smoothed_cross_entropy", "--optimizer", "pass_adam", "--pass-target-heads", "4"]
    options.parse_args_and_arch(parser, args)
    trained = {s for a in parser._actions for s in a.option_strings if s.startswith("--pass-")}
    listed = {a.option_strings[0]: a for a in flags.build_parser()._actions
              if a.option_strings[0].startswith("--pass-")}
    assert trained and trained <= set(listed)
    assert "--pass-pruned-heads" in listed
    for name, action in listed.items():
        assert action.help and action.help != argparse.SUPPRESS and len(action.help) > 20, name


def test_pass_flags_prints_help(capsys):
    assert flags.main([]) == 0
    out = capsys.readouterr().out
    assert "--pass-target-heads" in out and "criterion --criterion pass_label_smoothed_cross_entropy" in out


def test_every_language_model_pass_flag_is_listed():
    parser = options.get_training_parser()
    args = ["data", "--task", "language_modeling_pass", "--arch", "transformer_lm_pass_gpt2_tiny",
            "--criterion", "pass_cross_entropy", "--optimizer", "pass_adam", "--pass-target-heads", "4"]
    options.parse_args_and_arch(parser, args)
    trained = {s for a in parser._actions for s in a.option_strings if s.startswith("--pass-")}
    listed = {s for a in flags.build_parser()._actions for s in a.option_strings}
    assert "--pass-concentrator" in trained and "--pass-beta" in trained and trained <= listed
