"""The download-free tokenizer, model and task used by demos and tests."""

import pytest

pytest.importorskip("transformers")

from adpo.data.arithmetic import ArithmeticTask
from adpo.testing import CHARSET, char_tokenizer, tiny_qwen3


def test_char_tokenizer_round_trip_and_save(tmp_path):
    from transformers import AutoTokenizer

    tok = char_tokenizer()
    text = "12+34=46"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.pad_token_id == 0 and tok.eos_token_id == 2 and len(tok) == 4 + len(set(CHARSET))
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)(text)["input_ids"] == ids
    assert "assistant: " in tok.apply_chat_template(
        [{"role": "user", "content": "1+1="}], tokenize=False, add_generation_prompt=True
    )


def test_tiny_qwen3_forward():
    tok = char_tokenizer()
    model = tiny_qwen3(len(tok), hidden_size=32, num_layers=1)
    enc = tok(["1+2="], return_tensors="pt")
    assert model(**enc).logits.shape == (1, 4, len(tok))
    with pytest.raises(ValueError, match="num_heads"):
        tiny_qwen3(10, hidden_size=30, num_heads=4)


def test_arithmetic_task():
    task = ArithmeticTask(digits=2, ops="+-")
    rows = task.sample(50, seed=3)
    assert rows == task.sample(50, seed=3)
    for row in rows:
        a, b = row["prompt"][:-1].replace("-", " - ").replace("+", " + ").split()[::2]
        assert int(row["answer"]) == eval(row["prompt"][:-1])
        del a, b
    assert ArithmeticTask.reward("46<eos>", "46") == 1.0
    assert ArithmeticTask.reward("47", "46") == 0.0
    assert ArithmeticTask.score("46", "46") == 1.0
    assert 0 < ArithmeticTask.score("45", "46") < 1
    assert ArithmeticTask.score("", "46") == 0.0
    assert ArithmeticTask.extract(" -12abc") == "-12"
    with pytest.raises(ValueError, match="ops"):
        ArithmeticTask(ops="/")
