"""Route checks and formatting. Run: pytest tests/routing/test_route.py"""

import pytest
import torch

from duollm import Choice
from duollm.routing.route import check_route, format_route, parse_route


def test_choice_values_are_the_stored_ones():
    assert (Choice.SKIP, Choice.SMALL, Choice.BIG) == (0, 1, 2)


def test_parse_and_format_round_trip():
    r = parse_route("BS-B")
    assert r.dtype == torch.uint8 and r.tolist() == [2, 1, 0, 2]
    assert format_route(r) == "BS-B"


@pytest.mark.parametrize("text", ["", "BX", "bbss"])
def test_parse_rejects_bad_letters(text):
    with pytest.raises(ValueError, match="bad route string"):
        parse_route(text)


def test_parse_checks_length():
    with pytest.raises(ValueError, match="has 3 layers"):
        parse_route("BBS", n_layer=4)


@pytest.mark.parametrize(
    "route, match",
    [
        (torch.zeros(4, dtype=torch.int64), "dtype"),
        (torch.zeros(2, 4, dtype=torch.uint8), r"\(L,\) or \(B, T, L\)"),
        (torch.zeros(3, dtype=torch.uint8), "3 layers"),
        (torch.full((4,), 3, dtype=torch.uint8), "value 3"),
        (torch.zeros(2, 5, 4, dtype=torch.uint8), "input is"),
        ([2, 2, 2, 2], "torch.Tensor"),
    ],
)
def test_check_route_names_the_problem(route, match):
    with pytest.raises(ValueError, match=match):
        check_route(route, 4, (2, 6))


def test_check_route_accepts_both_shapes():
    check_route(torch.zeros(4, dtype=torch.uint8), 4)
    check_route(torch.full((2, 6, 4), 2, dtype=torch.uint8), 4, (2, 6))
