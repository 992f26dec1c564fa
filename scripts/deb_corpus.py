#!/usr/bin/env python3
"""Build a German->English parallel corpus from unpacked Debian packages.

Used by ``scripts/prepare_deb_de_en.sh``; it is run on packages that the
shell script has already downloaded and unpacked. Sources:

* ``trans-de-en``: the Ding dictionary (example sentences and phrases);
* ``libreoffice-help-de`` / ``libreoffice-help-en-us``: help pages aligned
  on (file, paragraph id, occurrence);
* ``gnome-user-docs``: Mallard pages aligned block by block;
* ``debian-reference-de`` / ``debian-reference-en``: HTML chapters aligned
  block by block.

Sub-commands:

``build``   extract, clean, deduplicate and split; writes ``raw/`` and
            ``counts.json``;
``spm``     learn a joint sentencepiece BPE model and encode the raw splits;
``report``  print a ``counts.json`` as a small table.

Only the standard library is used, plus ``sentencepiece`` for ``spm``.
Every failure ends with one line ``error: ...`` on stderr and exit status 1.
"""

import argparse
import json
import os
import random
import re
import sys
import unicodedata
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

MIN_PAIRS_PER_SOURCE = 1000
MAX_WORDS = 80
MAX_CHAR_RATIO = 2.5
HELDOUT_DING = 1000
HELDOUT_LIBO = 1000
# LibreOffice files with more usable pairs than this are kept for training:
# held-out sets drawn from many small pages are more varied.
MAX_HELDOUT_FILE_PAIRS = 60

DING_FILE = "usr/share/trans/de-en"
LIBO_ROOTS = {"de": "usr/share/libreoffice/help/de",
              "en": "usr/share/libreoffice/help/en-US"}
GNOME_ROOTS = {"de": "usr/share/help/de", "en": "usr/share/help/C"}
DEBREF_DIR = "usr/share/debian-reference"

DE_WORDS = frozenset(
    "der die das und ist nicht mit den dem des ein eine einen einem einer "
    "zu auf für von sie ich er es wir ihr sich auch wird werden kann können "
    "oder wenn im ins zum zur bei nach über aus wie noch nur aber sind "
    "hat haben dass diese dieser dieses wählen klicken".split())
EN_WORDS = frozenset(
    "the and is not with of a an to on for from you i he it we they this "
    "that these can will be are was were or if in at by after as but has "
    "have which choose click select".split())


class CorpusError(Exception):
    """A problem that stops the build; its message is shown to the user."""


# ---------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------

def normalize_text(text):
    """Return ``text`` in NFC with typographic apostrophes made ASCII and
    all runs of whitespace collapsed to one space."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\u2019", "'").replace("\u00a0", " ")
    return " ".join(text.split())


def side_key(text):
    """Return a loose key of one side of a pair (lower case, letters and
    digits only), used to find near-identical strings across splits."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def word_count(text):
    """Return the number of whitespace-separated words in ``text``."""
    return len(text.split())


def stopword_hits(text, words):
    """Return how many tokens of ``text`` are in the set ``words``."""
    tokens = re.findall(r"\w+", text.lower())
    return sum(1 for tok in tokens if tok in words)


def looks_like_language(text, own, other):
    """Return False when ``text`` has more function words of the ``other``
    language than of its ``own`` one (a simple language check)."""
    return stopword_hits(text, own) >= stopword_hits(text, other)


def keep_pair(de, en):
    """Return True when the pair passes the cleaning filters: 1-80 words a
    side, a plausible character-length ratio, not an untranslated copy, and
    each side looking like its language."""
    if not (1 <= word_count(de) <= MAX_WORDS and 1 <= word_count(en) <= MAX_WORDS):
        return False
    longer, shorter = max(len(de), len(en)), min(len(de), len(en))
    if (longer + 5) / (shorter + 5) > MAX_CHAR_RATIO:
        return False
    if side_key(de) == side_key(en) or not side_key(de) or not side_key(en):
        return False
    return (looks_like_language(de, DE_WORDS, EN_WORDS)
            and looks_like_language(en, EN_WORDS, DE_WORDS))


def clean_pairs(pairs):
    """Normalize, filter and deduplicate ``(de, en, group)`` triples, keeping
    the first occurrence of each exact (de, en) pair."""
    seen = set()
    out = []
    for de, en, group in pairs:
        de, en = normalize_text(de), normalize_text(en)
        if (de, en) in seen or not keep_pair(de, en):
            continue
        seen.add((de, en))
        out.append((de, en, group))
    return out


# ---------------------------------------------------------------------------
# Ding dictionary (trans-de-en)
# ---------------------------------------------------------------------------

DING_MARKUP = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]|<[^<>]*>|\([^()]*\)")
DING_REJECT = re.compile(r"/|\.\.\.|\u2026|~|\b(?:sth|sb|etw|jdm|jdn|jds|jd)\b\.?")


def strip_ding_markup(item):
    """Remove ``{grammar}``, ``[domain]``, ``<abbr>`` and optional
    ``(words)`` from one Ding item and tidy the spaces left behind."""
    previous = None
    while previous != item:  # nested brackets: strip from the inside out
        previous = item
        item = DING_MARKUP.sub(" ", item)
    item = " ".join(item.split())
    return re.sub(r"\s+([,.!?;:])", r"\1", item)


def is_sentence(item):
    """Return True for an example sentence: at least 3 words, capitalised
    start and final ``.``, ``!`` or ``?``."""
    return (word_count(item) >= 3 and item[-1] in ".!?"
            and item[0].isupper())


DING_VERB_TAG = re.compile(r"\{v[tir]?\}")


def ding_entry_pairs(line):
    """Yield ``(de_item, en_item, is_verb_entry)`` for one dictionary line:
    the ``|`` parts are matched one to one and the ``;`` synonyms zipped
    when both sides list the same number of them (else only the first
    ones). ``is_verb_entry`` tells that the headword is a verb, whose
    following parts are mostly inflected forms."""
    if line.startswith("#") or line.count(" :: ") != 1:
        return
    de_side, en_side = line.rstrip("\n").split(" :: ")
    de_parts, en_parts = de_side.split(" | "), en_side.split(" | ")
    if len(de_parts) != len(en_parts):
        return
    is_verb = bool(DING_VERB_TAG.search(de_parts[0]))
    for de_part, en_part in zip(de_parts, en_parts):
        de_syn, en_syn = de_part.split("; "), en_part.split("; ")
        if len(de_syn) != len(en_syn):
            de_syn, en_syn = de_syn[:1], en_syn[:1]
        for de_item, en_item in zip(de_syn, en_syn):
            yield de_item, en_item, is_verb


def is_phrase(de, en, is_verb):
    """Return True for a multi-word phrase pair (two or more words a side,
    not a sentence); in verb entries only infinitive phrases (English
    ``to ...``) count, which skips the inflected forms."""
    if word_count(de) < 2 or word_count(en) < 2:
        return False
    if is_sentence(de) or is_sentence(en):
        return False
    return not is_verb or en.startswith("to ")


def ding_item_ok(item):
    """Return True when a raw Ding item has no alternatives (``/``),
    ellipses or sth/sb/etw/jdm placeholders."""
    return not DING_REJECT.search(item)


def read_ding(path):
    """Return ``(sentences, phrases)`` from the Ding file at ``path``: both
    lists of ``(de, en, group)``; the group is the source line number.

    Sentences are items that are example sentences on both sides; phrases
    are the remaining items with at least two words on both sides."""
    sentences, phrases = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            for de_raw, en_raw, is_verb in ding_entry_pairs(line):
                if not (ding_item_ok(de_raw) and ding_item_ok(en_raw)):
                    continue
                de, en = strip_ding_markup(de_raw), strip_ding_markup(en_raw)
                if not de or not en:
                    continue
                if is_sentence(de) and is_sentence(en):
                    sentences.append((de, en, number))
                elif is_phrase(de, en, is_verb):
                    phrases.append((de, en, number))
    return sentences, phrases


# ---------------------------------------------------------------------------
# HTML and XML block extraction
# ---------------------------------------------------------------------------

VOID_TAGS = frozenset("area base br col embed hr img input link meta param "
                      "source track wbr".split())


class BlockParser(HTMLParser):
    """Collect the text of selected HTML elements in document order.

    ``wants(tag, attrs)`` decides whether an element starts a block; the
    text of a block nested in another one goes to the inner block only.
    Text inside ``skip_tags`` (scripts, code listings) is ignored. Each
    block is a ``(tag, attrs, text)`` triple in ``self.blocks``."""

    def __init__(self, wants, skip_tags=("script", "style")):
        """Set up an empty block list for the given selection rules."""
        super().__init__(convert_charrefs=True)
        self.wants = wants
        self.skip_tags = frozenset(skip_tags)
        self.blocks = []
        self.open = []      # stack of [tag, attrs, depth, pieces]
        self.skipping = 0   # depth inside skipped elements

    def handle_starttag(self, tag, attrs):
        """Open a block, a skipped region, or count a nested tag."""
        if tag in VOID_TAGS:
            return
        if self.skipping or tag in self.skip_tags:
            self.skipping += 1
            return
        for frame in self.open:
            if frame[0] == tag:
                frame[2] += 1
        if self.wants(tag, dict(attrs)):
            self.open.append([tag, dict(attrs), 1, []])

    def handle_endtag(self, tag):
        """Close the innermost block whose element ends here."""
        if tag in VOID_TAGS:
            return
        if self.skipping:
            self.skipping -= 1
            return
        for frame in self.open:
            if frame[0] == tag:
                frame[2] -= 1
        while self.open and self.open[-1][2] <= 0:
            tag_, attrs, _, pieces = self.open.pop()
            self.blocks.append((tag_, attrs, "".join(pieces)))

    def handle_data(self, data):
        """Add text to the innermost open block."""
        if self.open and not self.skipping:
            self.open[-1][3].append(data)


def parse_html_blocks(path, wants, skip_tags=("script", "style")):
    """Return the blocks of the HTML file at ``path`` (see BlockParser) in
    the order they close (an inner block comes before its outer one)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        source = handle.read()
    parser = BlockParser(wants, skip_tags)
    parser.feed(source)
    parser.close()
    return parser.blocks


def list_files(root, suffix):
    """Return the sorted paths under ``root`` ending in ``suffix``,
    relative to ``root``."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(suffix):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


# ---------------------------------------------------------------------------
# LibreOffice help
# ---------------------------------------------------------------------------

LIBO_ID = re.compile(r"^(?:par|hd)_id")


def libo_paragraphs(path):
    """Return ``{(id, occurrence): text}`` for the elements of one help page
    whose id starts with ``par_id`` or ``hd_id``."""
    blocks = parse_html_blocks(
        path, lambda tag, attrs: bool(LIBO_ID.match(attrs.get("id") or "")))
    seen, out = {}, {}
    for _, attrs, text in blocks:
        ident = attrs["id"]
        seen[ident] = seen.get(ident, 0) + 1
        out[(ident, seen[ident])] = text
    return out


def read_libreoffice(de_pkg, en_pkg):
    """Return ``(de, en, file)`` triples aligned on (file, id, occurrence)
    from the unpacked German and English help packages."""
    de_root = os.path.join(de_pkg, LIBO_ROOTS["de"])
    en_root = os.path.join(en_pkg, LIBO_ROOTS["en"])
    pairs = []
    for rel in list_files(en_root, ".html"):
        de_path = os.path.join(de_root, rel)
        if not os.path.exists(de_path):
            continue
        de_pars = libo_paragraphs(de_path)
        for key, en_text in libo_paragraphs(os.path.join(en_root, rel)).items():
            if key in de_pars:
                pairs.append((de_pars[key], en_text, rel))
    return pairs


# ---------------------------------------------------------------------------
# GNOME user docs (Mallard)
# ---------------------------------------------------------------------------

MALLARD_BLOCKS = frozenset(["title", "subtitle", "desc", "p"])


def local_name(tag):
    """Return an XML tag without its ``{namespace}`` prefix."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def mallard_blocks(path):
    """Return the texts of the title/desc/p blocks of a Mallard page in
    document order, skipping the ``<info>`` metadata (except ``desc``)
    and code listings, editorial comments and credits."""
    root = ET.parse(path).getroot()
    texts = []

    def walk(node, in_info):
        """Append the blocks under ``node``; ``in_info``: inside <info>."""
        name = local_name(node.tag)
        if name in ("code", "screen", "credit", "license", "comment"):
            return
        in_info = in_info or name == "info"
        if name in MALLARD_BLOCKS and (not in_info or name == "desc"):
            texts.append("".join(node.itertext()))
            return
        for child in node:
            walk(child, in_info)

    walk(root, False)
    return texts


def aligned_blocks(de_blocks, en_blocks, group):
    """Return ``(de, en, group)`` triples when both block lists have the
    same length (the structural alignment holds), else an empty list."""
    if len(de_blocks) != len(en_blocks):
        return []
    return [(de, en, group) for de, en in zip(de_blocks, en_blocks)]


def read_gnome(pkg):
    """Return ``(de, en, page)`` triples of the GNOME help (German vs the C
    original), aligned block by block for pages of equal structure."""
    de_root = os.path.join(pkg, GNOME_ROOTS["de"])
    en_root = os.path.join(pkg, GNOME_ROOTS["en"])
    pairs = []
    for rel in list_files(en_root, ".page"):
        de_path = os.path.join(de_root, rel)
        if not os.path.exists(de_path):
            continue
        try:
            de_blocks = mallard_blocks(de_path)
            en_blocks = mallard_blocks(os.path.join(en_root, rel))
        except ET.ParseError:
            continue
        pairs.extend(aligned_blocks(de_blocks, en_blocks, rel))
    return pairs


# ---------------------------------------------------------------------------
# Debian reference (DocBook HTML)
# ---------------------------------------------------------------------------

DEBREF_BLOCKS = frozenset("p h1 h2 h3 h4 h5 h6 td th dt li title".split())


def debref_blocks(path):
    """Return the texts of the paragraph-like blocks of one Debian
    reference HTML chapter, ignoring ``<pre>`` listings."""
    blocks = parse_html_blocks(
        path, lambda tag, attrs: tag in DEBREF_BLOCKS,
        skip_tags=("script", "style", "pre"))
    return [text for _, _, text in blocks]


def read_debian_reference(de_pkg, en_pkg):
    """Return ``(de, en, chapter)`` triples of the Debian reference,
    aligned block by block for chapters of equal structure."""
    de_dir = os.path.join(de_pkg, DEBREF_DIR)
    en_dir = os.path.join(en_pkg, DEBREF_DIR)
    pairs = []
    for name in sorted(os.listdir(en_dir)):
        match = re.match(r"^(.*)\.en\.html$", name)
        if not match:
            continue
        de_path = os.path.join(de_dir, match.group(1) + ".de.html")
        if os.path.exists(de_path):
            pairs.extend(aligned_blocks(debref_blocks(de_path),
                                        debref_blocks(os.path.join(en_dir, name)),
                                        match.group(1)))
    return pairs


# ---------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------

def shares_side(pair, de_keys, en_keys):
    """Return True when either side of ``pair`` matches a key in the given
    sets of held-out side keys."""
    return side_key(pair[0]) in de_keys or side_key(pair[1]) in en_keys


def unique_sides(pairs, de_keys, en_keys):
    """Return the pairs whose sides are not yet in ``de_keys``/``en_keys``
    and not repeated among themselves; adds their keys to the sets."""
    out = []
    for pair in pairs:
        if shares_side(pair, de_keys, en_keys):
            continue
        de_keys.add(side_key(pair[0]))
        en_keys.add(side_key(pair[1]))
        out.append(pair)
    return out


def pick_random(pairs, count, rng, de_keys, en_keys):
    """Return ``(picked, rest)``: ``count`` pairs drawn at random among those
    not sharing a side with the keys (which are updated), and the others."""
    order = list(range(len(pairs)))
    rng.shuffle(order)
    picked, chosen = [], set()
    for index in order:
        if len(picked) >= count:
            break
        pair = pairs[index]
        if not shares_side(pair, de_keys, en_keys):
            de_keys.add(side_key(pair[0]))
            en_keys.add(side_key(pair[1]))
            picked.append(pair)
            chosen.add(index)
    rest = [pair for index, pair in enumerate(pairs) if index not in chosen]
    return picked, rest


def group_pairs(pairs):
    """Return ``{group: [pairs]}`` keeping the input order in each group."""
    groups = {}
    for pair in pairs:
        groups.setdefault(pair[2], []).append(pair)
    return groups


def pick_groups(pairs, count, rng, de_keys, en_keys):
    """Return ``(picked, rest)``: whole groups (files) drawn at random until
    ``count`` pairs are picked; pairs of a picked group beyond ``count`` or
    sharing a side with the keys are dropped, the other groups are the rest.
    Only groups of at most MAX_HELDOUT_FILE_PAIRS pairs are drawn."""
    groups = group_pairs(pairs)
    names = sorted(groups)
    rng.shuffle(names)
    picked, used = [], set()
    for name in names:
        if len(picked) >= count:
            break
        if len(groups[name]) > MAX_HELDOUT_FILE_PAIRS:
            continue
        used.add(name)
        fresh = unique_sides(groups[name], de_keys, en_keys)
        picked.extend(fresh[:count - len(picked)])
    rest = [pair for pair in pairs if pair[2] not in used]
    return picked, rest


def split_corpus(sources, seed):
    """Split cleaned sources into ``{split: [(de, en, source)]}``.

    Test, then valid, get HELDOUT_DING random Ding sentences and
    HELDOUT_LIBO LibreOffice paragraphs drawn by file. Training keeps every
    other pair (phrases, GNOME and Debian reference included) that shares no
    side with a held-out pair."""
    rng = random.Random(seed)
    de_keys, en_keys = set(), set()
    splits = {"test": [], "valid": []}
    ding, libo = sources["ding_sentences"], sources["libreoffice"]
    for split in ("test", "valid"):
        picked, ding = pick_random(ding, HELDOUT_DING, rng, de_keys, en_keys)
        splits[split] += [(de, en, "ding_sentences") for de, en, _ in picked]
        picked, libo = pick_groups(libo, HELDOUT_LIBO, rng, de_keys, en_keys)
        splits[split] += [(de, en, "libreoffice") for de, en, _ in picked]
    remaining = dict(sources, ding_sentences=ding, libreoffice=libo)
    splits["train"] = [
        (de, en, name)
        for name in sorted(remaining)
        for de, en, _ in remaining[name]
        if not shares_side((de, en), de_keys, en_keys)]
    return splits


# ---------------------------------------------------------------------------
# Build command
# ---------------------------------------------------------------------------

def extract_sources(pkgs):
    """Return ``{source: [(de, en, group)]}`` of raw pairs read from the
    unpacked packages under ``pkgs`` (one folder per package name)."""
    def pkg(name):
        """Return the folder of unpacked package ``name`` or fail."""
        path = os.path.join(pkgs, name)
        if not os.path.isdir(path):
            raise CorpusError("package folder missing: %s" % path)
        return path

    ding_path = os.path.join(pkg("trans-de-en"), DING_FILE)
    if not os.path.exists(ding_path):
        raise CorpusError("Ding dictionary not found at %s" % ding_path)
    sentences, phrases = read_ding(ding_path)
    return {
        "ding_sentences": sentences,
        "ding_phrases": phrases,
        "libreoffice": read_libreoffice(pkg("libreoffice-help-de"),
                                        pkg("libreoffice-help-en-us")),
        "gnome_user_docs": read_gnome(pkg("gnome-user-docs")),
        "debian_reference": read_debian_reference(pkg("debian-reference-de"),
                                                  pkg("debian-reference-en")),
    }


def check_minimum(cleaned):
    """Raise CorpusError when a source gave fewer than
    MIN_PAIRS_PER_SOURCE pairs (a sign of a format change)."""
    for name in sorted(cleaned):
        if len(cleaned[name]) < MIN_PAIRS_PER_SOURCE:
            raise CorpusError(
                "source %s gave only %d pairs (< %d): package format changed?"
                % (name, len(cleaned[name]), MIN_PAIRS_PER_SOURCE))


def write_split(raw_dir, split, pairs):
    """Write ``split.de``, ``split.en`` and ``split.origin`` (the source
    of each line) into ``raw_dir``."""
    names = {"de": 0, "en": 1, "origin": 2}
    for suffix, column in names.items():
        path = os.path.join(raw_dir, "%s.%s" % (split, suffix))
        with open(path, "w", encoding="utf-8") as handle:
            for pair in pairs:
                handle.write(pair[column] + "\n")


def count_table(extracted, cleaned, splits, versions, seed):
    """Return the dictionary saved as ``counts.json``."""
    per_split = {}
    for split, pairs in splits.items():
        by_source = {}
        for _, _, source in pairs:
            by_source[source] = by_source.get(source, 0) + 1
        per_split[split] = dict(sorted(by_source.items()), total=len(pairs))
    return {
        "seed": seed,
        "packages": versions,
        "extracted": {k: len(v) for k, v in sorted(extracted.items())},
        "cleaned": {k: len(v) for k, v in sorted(cleaned.items())},
        "splits": per_split,
    }


def read_versions(path):
    """Return ``{package: version}`` from a ``name version`` per line file
    (missing file: empty dictionary)."""
    versions = {}
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) == 2:
                    versions[parts[0]] = parts[1]
    return versions


def cmd_build(args):
    """Extract, clean and split the corpus; write raw/ and counts.json."""
    extracted = extract_sources(args.pkgs)
    cleaned = {name: clean_pairs(pairs) for name, pairs in extracted.items()}
    check_minimum(cleaned)
    splits = split_corpus(cleaned, args.seed)
    for split in ("valid", "test"):
        if len(splits[split]) < HELDOUT_DING + HELDOUT_LIBO:
            raise CorpusError("%s split has only %d pairs"
                              % (split, len(splits[split])))
    raw_dir = os.path.join(args.out, "raw")
    os.makedirs(raw_dir, exist_ok=True)
    for split, pairs in splits.items():
        write_split(raw_dir, split, pairs)
    counts = count_table(extracted, cleaned, splits,
                         read_versions(args.versions), args.seed)
    with open(os.path.join(args.out, "counts.json"), "w", encoding="utf-8") as handle:
        json.dump(counts, handle, indent=2)
        handle.write("\n")


# ---------------------------------------------------------------------------
# Sentencepiece command
# ---------------------------------------------------------------------------

def train_spm(train_files, model_prefix, vocab_size):
    """Learn a joint BPE sentencepiece model on ``train_files``."""
    import sentencepiece as spm
    spm.SentencePieceTrainer.train(
        input=",".join(train_files), model_prefix=model_prefix,
        vocab_size=vocab_size, model_type="bpe", character_coverage=0.9999,
        num_threads=2, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
        minloglevel=2)


def encode_file(processor, src, dst):
    """Write ``src`` encoded into space-separated pieces to ``dst``."""
    with open(src, encoding="utf-8") as inp, open(dst, "w", encoding="utf-8") as out:
        for line in inp:
            out.write(" ".join(processor.encode(line.rstrip("\n"), out_type=str)) + "\n")


def cmd_spm(args):
    """Train the joint model on raw/train.{de,en}; encode all raw splits.

    Works inside ``args.out`` with relative paths: the model stores its
    training file names, and so stays byte-identical wherever it is built."""
    import sentencepiece as spm
    os.chdir(args.out)
    os.makedirs("spm", exist_ok=True)
    train_spm(["raw/train.de", "raw/train.en"], "spm", args.vocab_size)
    processor = spm.SentencePieceProcessor(model_file="spm.model")
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            name = "%s.%s" % (split, lang)
            encode_file(processor, os.path.join("raw", name),
                        os.path.join("spm", name))


# ---------------------------------------------------------------------------
# Report command
# ---------------------------------------------------------------------------

def cmd_report(args):
    """Print the per-source and per-split counts of a counts.json file."""
    with open(args.counts, encoding="utf-8") as handle:
        counts = json.load(handle)
    print("source               extracted   cleaned     train   valid    test")
    for name in counts["cleaned"]:
        row = [counts["splits"][s].get(name, 0) for s in ("train", "valid", "test")]
        print("%-20s %9d %9d %9d %7d %7d" % (
            name, counts["extracted"][name], counts["cleaned"][name], *row))
    totals = [counts["splits"][s]["total"] for s in ("train", "valid", "test")]
    print("%-20s %9s %9s %9d %7d %7d" % ("total", "", "", *totals))


# ---------------------------------------------------------------------------

def parse_args(argv):
    """Return the parsed command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="extract, clean and split")
    build.add_argument("--pkgs", required=True, help="unpacked packages")
    build.add_argument("--out", required=True, help="output folder")
    build.add_argument("--seed", type=int, default=1)
    build.add_argument("--versions", help="file of 'package version' lines")
    enc = sub.add_parser("spm", help="learn sentencepiece and encode")
    enc.add_argument("--out", required=True, help="folder holding raw/")
    enc.add_argument("--vocab-size", type=int, default=8000)
    report = sub.add_parser("report", help="print counts.json")
    report.add_argument("counts")
    return parser.parse_args(argv)


def main(argv=None):
    """Run one sub-command; turn any failure into one line on stderr."""
    args = parse_args(argv)
    command = {"build": cmd_build, "spm": cmd_spm, "report": cmd_report}[args.command]
    try:
        command(args)
    except Exception as exc:  # one clear line, not a traceback
        if os.environ.get("DEB_CORPUS_DEBUG"):
            raise
        message = str(exc) if isinstance(exc, CorpusError) else "%s: %s" % (
            type(exc).__name__, exc)
        print("error: deb_corpus %s: %s" % (args.command, message), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
