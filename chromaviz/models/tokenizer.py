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


def write_clip_tokenizer(folder: Path, words: Iterable[str]) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` into ``folder`` so that each of ``words`` is one token.

    Words must be lowercase ASCII without spaces (CLIP lowercases its input). Returns ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges = []
    for word in words:  # merge each word left to right into one "word</w>" token
        if not word or word != word.lower() or not word.isascii() or " " in word:
            raise ValueError(f"tokenizer words must be lowercase ASCII without spaces, got {word!r}")
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            merged = pieces[0] + pieces[1]
            if merged not in vocab_list:
                vocab_list.append(merged)
            pieces = [merged] + pieces[2:]
    merges = list(dict.fromkeys(merges))
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def clip_tokenizer(folder: Path, words: Iterable[str], max_length: int = 16):
    """A ``transformers.CLIPTokenizer`` for ``words``, its files written into ``folder``."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer(folder, words)
    return CLIPTokenizer(str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"), model_max_length=max_length)
