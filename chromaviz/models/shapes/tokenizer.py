"""A CLIP tokenizer written from local files: byte-level BPE with one merged token per known word.

CLIP's tokenizer needs ``vocab.json`` and ``merges.txt``. For a small model trained here, a vocabulary
of the 512 byte tokens (each byte alone and word-final), one token per known word and the two
specials is enough: known words become single tokens, anything else still tokenizes, byte by byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte → printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _chain(word: str) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """The merges that build ``word`` left to right: per step (left, right, the other adjacent pairs then)."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    steps = []
    while len(pieces) > 1:
        steps.append((pieces[0], pieces[1], list(zip(pieces[1:-1], pieces[2:]))))
        pieces = [pieces[0] + pieces[1]] + pieces[2:]
    return steps


def _ranked_merges(words: list[str]) -> list[tuple[str, str]]:
    """All words' merges, ordered so that byte-level BPE builds each word into one token.

    BPE applies, again and again, the lowest-ranked merge among the adjacent pairs. Written word by
    word, a merge of an earlier word can fire inside a later one and derail it ("r e" of "red" inside
    "green" leaves g|re|e|n). So every merge a word needs must rank below each other merge that could
    fire at that step: a topological order of those constraints, else the first-seen order.
    """
    chains = {w: _chain(w) for w in words}
    merges = list(dict.fromkeys((a, b) for steps in chains.values() for a, b, _ in steps))
    known = set(merges)
    before: dict[tuple[str, str], set] = {m: set() for m in merges}  # merge -> merges that must rank after it
    for steps in chains.values():
        for a, b, others in steps:
            before[(a, b)].update(o for o in others if o in known and o != (a, b))
    waiting = {m: 0 for m in merges}
    for m, later in before.items():
        for o in later:
            waiting[o] += 1
    order, ready = [], [m for m in merges if waiting[m] == 0]
    while ready:
        m = min(ready, key=merges.index)
        ready.remove(m)
        order.append(m)
        for o in before[m]:
            waiting[o] -= 1
            if waiting[o] == 0:
                ready.append(o)
    if len(order) < len(merges):
        stuck = sorted(w for w, steps in chains.items() if any(waiting[(a, b)] for a, b, _ in steps))
        raise ValueError(f"no order of the left-to-right merges keeps each of these words one token: {stuck}")
    return order


def write_clip_tokenizer(folder: Path, words: Iterable[str]) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` into ``folder`` so that each of ``words`` is one token.

    Words must be lowercase ASCII without spaces (CLIP lowercases its input). The token ids depend on
    the words and their order only: the 512 byte tokens, then each word's prefixes as it is built, then
    the two specials. Returns ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = list(dict.fromkeys(words))
    for word in words:
        if not word or word != word.lower() or not word.isascii() or " " in word:
            raise ValueError(f"tokenizer words must be lowercase ASCII without spaces, got {word!r}")
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    vocab_list += [a + b for w in words for a, b, _ in _chain(w)]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    merges = [f"{a} {b}" for a, b in _ranked_merges(words)]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def clip_tokenizer(folder: Path, words: Iterable[str], max_length: int = 16):
    """A ``transformers.CLIPTokenizer`` for ``words``, its files written into ``folder``."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer(folder, words)
    return CLIPTokenizer(str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"), model_max_length=max_length)
