"""The CLIP tokenizer written from local files: one token per known word, bytes for the rest."""

import itertools
import json

import pytest

from chromaviz.models.shapes import dataset as shapes
from chromaviz.models.shapes.model import WEIGHTS
from chromaviz.models.shapes.tokenizer import clip_tokenizer, write_clip_tokenizer
from diffusers_models import WORDS


def _tokens(tok, text):
    return tok.convert_ids_to_tokens(tok(text).input_ids)


@pytest.mark.parametrize("words", [shapes.VOCABULARY, WORDS], ids=["shapes", "tests"])
def test_every_known_word_is_one_token(tmp_path, words):
    tok = clip_tokenizer(tmp_path, words, max_length=16)
    for word in words:
        assert _tokens(tok, word) == ["<|startoftext|>", f"{word}</w>", "<|endoftext|>"], word


def test_words_that_share_pieces_stay_whole(tmp_path):
    """Merges of "red" ("r e") fire inside "green" and those of "triangle" ("t r") inside "stripes"
    unless they rank after what those words need."""
    tok = clip_tokenizer(tmp_path, ["red", "triangle", "green", "stripes", "tree", "street"])
    assert _tokens(tok, "green stripes street red")[1:-1] == ["green</w>", "stripes</w>", "street</w>", "red</w>"]


def test_every_shapes_caption_fits_the_bundled_tokenizer():
    """Each caption is six word tokens, within the model's 10 positions: nothing is cut off."""
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(WEIGHTS, subfolder="tokenizer")
    vocab = tok.get_vocab()
    combinations = itertools.product(shapes.COLOURS, shapes.SHAPES, shapes.COLOURS, shapes.TEXTURES)
    for colour, shape, background, texture in ((c, s, b, t) for c, s, b, t in combinations if b != c):
        caption = shapes.Scene(colour, shape, background, texture).caption
        ids = tok(caption).input_ids
        assert len(ids) == 8 <= tok.model_max_length, caption
        assert ids[1:-1] == [vocab[f"{w}</w>"] for w in caption.split()], caption


def test_unknown_words_still_tokenize(tmp_path):
    tok = clip_tokenizer(tmp_path, ["red", "green"])
    tokens = _tokens(tok, "greenish reddy")[1:-1]
    assert len(tokens) > 2 and "".join(tokens).replace("</w>", " ").split() == ["greenish", "reddy"]


def test_the_written_vocabulary_is_the_one_the_bundled_model_was_trained_with(tmp_path):
    """Token ids depend on the words alone, so the text encoder's embedding rows keep their meaning."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer(tmp_path, shapes.VOCABULARY)
    bundled = CLIPTokenizer.from_pretrained(WEIGHTS, subfolder="tokenizer").get_vocab()
    assert json.loads((tmp_path / "vocab.json").read_text()) == bundled


def test_bad_words_are_refused(tmp_path):
    with pytest.raises(ValueError, match="lowercase ASCII without spaces"):
        write_clip_tokenizer(tmp_path, ["Red"])
    with pytest.raises(ValueError, match=r"keeps each of these words one token: \['xyzq', 'yzxyq'\]"):
        write_clip_tokenizer(tmp_path, ["xyzq", "yzxyq"])
