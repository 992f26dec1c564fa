from setuptools import find_packages, setup

setup(
    name="pass_fairseq",
    version="0.1.0",
    description="PASS / PASSCONC attention-head pruning for fairseq sequence-to-sequence Transformers",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["pass_fairseq", "pass_fairseq.*"]),
    python_requires=">=3.9",
    # fairseq is installed separately (ve-fairseq==0.12.3 with --no-deps): see requirements.txt
    install_requires=["torch", "sacrebleu"],
    # the plugin's commands, installed the way fairseq installs fairseq-train & co.
    entry_points={
        "console_scripts": [
            "pass-prune-checkpoint = pass_fairseq.cli.prune_checkpoint:main",
            "pass-inspect-gates = pass_fairseq.cli.inspect_gates:main",
            "pass-bench-inference = pass_fairseq.cli.bench_inference:main",
            "pass-bench-training = pass_fairseq.cli.bench_training:main",
            "pass-profile-step = pass_fairseq.cli.profile_step:main",
            "pass-flags = pass_fairseq.cli.pass_flags:main",
            "pass-sweep = pass_fairseq.cli.sweep:main",
            "pass-michel-prune = pass_fairseq.cli.michel_prune:main",
            "pass-train-distributed = pass_fairseq.cli.train_distributed:main",
            "pass-convert-bert = pass_fairseq.cli.convert_bert:main",
        ],
    },
    license="MIT",
)
