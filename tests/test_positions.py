from __future__ import annotations

import pytest
import torch

from liref_lens import at, every, last, mean, parse_position

LEFT = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
RIGHT = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])


@pytest.mark.parametrize(
    ("mask", "want_last", "want_first"),
    [(LEFT, [3, 3, 3], [2, 0, 3]), (RIGHT, [1, 3, 0], [0, 0, 0])],
)
def test_single_positions_follow_real_tokens(mask, want_last, want_first) -> None:
    assert last().select(mask).col.tolist() == want_last
    assert at(0).select(mask).col.tolist() == want_first
    assert at(-1).select(mask).col.tolist() == want_last


def test_at_counts_from_either_end() -> None:
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 0]])
    assert at(1).select(mask).col.tolist() == [2, 1]
    assert at(-2).select(mask).col.tolist() == [2, 1]
    assert at(-3).select(mask).col.tolist() == [1, 0]


def test_at_beyond_prompt_names_the_prompt() -> None:
    with pytest.raises(ValueError, match=r"position at\(-3\) is beyond prompt 12, which has 2"):
        at(-3).select(torch.tensor([[1, 1, 1], [0, 1, 1]]), row_ids=[11, 12])
    with pytest.raises(ValueError, match="beyond prompt 0"):
        at(5).select(torch.tensor([[1, 1]]))


def test_mean_and_every_reduce_real_tokens_only() -> None:
    acts = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    got = mean().select(mask).reduce(acts)
    want = torch.stack([acts[0, 1:].mean(0), acts[1].mean(0)])
    torch.testing.assert_close(got, want)
    sel = every().select(mask)
    torch.testing.assert_close(sel.reduce(acts), acts[mask.bool()])
    assert sel.out_row.tolist() == [0, 0, 1, 1, 1]
    assert sel.token_rank.tolist() == [0, 1, 0, 1, 2]


def test_selection_mask_and_empty_rows() -> None:
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]])
    assert last().select(mask).mask((2, 3)).tolist() == [[False, False, True], [False, True, False]]
    with pytest.raises(ValueError, match="prompt 1 has no real tokens"):
        mean().select(torch.tensor([[1, 1], [0, 0]]))


def test_parse_round_trip() -> None:
    for sel in (last(), mean(), every(), at(3), at(-2)):
        assert str(parse_position(str(sel))) == str(sel)
    with pytest.raises(ValueError, match="unknown position"):
        parse_position("first")
    with pytest.raises(TypeError):
        at(1.5)  # type: ignore[arg-type]
