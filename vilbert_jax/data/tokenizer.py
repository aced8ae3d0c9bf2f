"""Text tokenizers behind one interface: BERT WordPiece (a `vocab.txt`) and SentencePiece.

`encode` produces the model's text inputs: `[CLS] a [SEP]` (or `[CLS] a [SEP] b [SEP]` with
segment 1 for `b`), padded with the pad id to a fixed length.
"""
from __future__ import annotations

import abc
import os
from typing import Dict, List, Optional

import numpy as np

SYNTHETIC_VOCAB = os.path.join(os.path.dirname(__file__), "synthetic_vocab.txt")


class Tokenizer(abc.ABC):
  """Maps text to ids; subclasses set the special ids and implement `tokenize`."""
  vocab_size: int
  pad_id: int
  unk_id: int
  cls_id: int
  sep_id: int
  mask_id: int

  @abc.abstractmethod
  def tokenize(self, text: str) -> List[int]:
    """Ids of `text`'s tokens, without special tokens."""

  @property
  def special_ids(self) -> frozenset:
    return frozenset({self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id})

  def encode(self, text: str, max_len: int, text_b: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Tokenizes, adds `[CLS]`/`[SEP]`, truncates (longest segment first) and pads.

    Returns:
      dict of [max_len] int32 arrays: `input_ids`, `token_type_ids` (1 on `text_b` and its
      `[SEP]`), `attention_mask` (1 on real tokens).
    """
    a = self.tokenize(text)
    b = self.tokenize(text_b) if text_b is not None else []
    budget = max_len - (3 if text_b is not None else 2)
    if budget < 0:
      raise ValueError(f"max_len={max_len} leaves no room for the special tokens")
    while len(a) + len(b) > budget:
      (a if len(a) >= len(b) else b).pop()
    ids = [self.cls_id] + a + [self.sep_id]
    types = [0] * len(ids)
    if text_b is not None:
      ids += b + [self.sep_id]
      types += [1] * (len(b) + 1)
    out = {"input_ids": np.full(max_len, self.pad_id, np.int32),
           "token_type_ids": np.zeros(max_len, np.int32),
           "attention_mask": np.zeros(max_len, np.int32)}
    out["input_ids"][:len(ids)] = ids
    out["token_type_ids"][:len(ids)] = types
    out["attention_mask"][:len(ids)] = 1
    return out


class WordPieceTokenizer(Tokenizer):
  """bert-base-uncased behaviour: lower-casing, accent stripping, WordPiece over `vocab.txt`."""

  def __init__(self, vocab_file: str, lowercase: bool = True):
    from tokenizers import BertWordPieceTokenizer  # pylint: disable=import-outside-toplevel
    if not os.path.exists(vocab_file):
      raise FileNotFoundError(f"WordPiece vocab {vocab_file} does not exist")
    self._tok = BertWordPieceTokenizer(vocab_file, lowercase=lowercase, strip_accents=None,
                                       clean_text=True, handle_chinese_chars=True)
    vocab = self._tok.get_vocab()
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t not in vocab]
    if missing:
      raise ValueError(f"{vocab_file} lacks the special tokens {missing}")
    self.vocab_size = len(vocab)
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"))

  def tokenize(self, text: str) -> List[int]:
    return self._tok.encode(text, add_special_tokens=False).ids


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model whose vocabulary holds `[CLS]`, `[SEP]`, `[MASK]` (ALBERT style)."""

  def __init__(self, model_file: str, lowercase: bool = False):
    import sentencepiece  # pylint: disable=import-outside-toplevel
    if not os.path.exists(model_file):
      raise FileNotFoundError(f"SentencePiece model {model_file} does not exist")
    self._sp = sentencepiece.SentencePieceProcessor(model_file=model_file)
    self._lowercase = lowercase
    self.vocab_size = self._sp.get_piece_size()
    ids = {}
    for name, pieces in (("cls", ("[CLS]",)), ("sep", ("[SEP]",)), ("mask", ("[MASK]",)),
                         ("pad", ("<pad>", "[PAD]")), ("unk", ("<unk>", "[UNK]"))):
      found = [self._sp.piece_to_id(p) for p in pieces
               if self._sp.id_to_piece(self._sp.piece_to_id(p)) == p]
      if not found:
        raise ValueError(f"{model_file} has no piece for {' / '.join(pieces)}")
      ids[name] = found[0]
    self.cls_id, self.sep_id, self.mask_id = ids["cls"], ids["sep"], ids["mask"]
    self.pad_id, self.unk_id = ids["pad"], ids["unk"]

  def tokenize(self, text: str) -> List[int]:
    return self._sp.encode(text.lower() if self._lowercase else text)


def load_tokenizer(path: str) -> Tokenizer:
  """A `vocab.txt` gives WordPiece, a `.model` file SentencePiece."""
  if path.endswith(".model"):
    return SentencePieceTokenizer(path)
  return WordPieceTokenizer(path)


def synthetic_tokenizer() -> WordPieceTokenizer:
  """The tiny WordPiece vocabulary of the synthetic scenes grammar (shipped in this package)."""
  return WordPieceTokenizer(SYNTHETIC_VOCAB)
