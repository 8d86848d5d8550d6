"""Table 4 of Prompt to Polyp: trainable LoRA parameters per rank, on the published architectures (meta device)."""

import pytest

from msdm.lora.adapters import PAPER_RANKS
from msdm.lora.param_count import analytic_lora_params, format_table4, lora_trainable_params, table4


def test_table4_reproduces_the_papers_counts():
    rows = {r["rank"]: r for r in table4()}
    assert sorted(rows) == list(PAPER_RANKS)
    # The measured figures (paper: 2.1 M and 11.2 M at rank 4).
    assert round(rows[4]["kandinsky"] / 1e6, 2) == 2.13
    assert round(rows[64]["kandinsky"] / 1e6, 1) == 34.1
    assert round(rows[4]["flux"] / 1e6, 2) == 11.21
    assert round(rows[64]["flux"] / 1e6, 1) == 179.3
    # Exact counts: 20 prior layers x 4 projections x (2048 + 2048) per rank; FLUX 2 801 664 per rank.
    assert rows[4]["kandinsky_prior"] == 4 * 20 * 4 * 4096
    assert rows[4]["flux"] == 4 * 2_801_664
    for r in PAPER_RANKS:  # LoRA is linear in the rank
        assert rows[r]["flux"] == rows[4]["flux"] * r // 4
        assert rows[r]["kandinsky"] == rows[r]["kandinsky_prior"] + rows[r]["kandinsky_decoder"]


@pytest.mark.parametrize("model", ["kandinsky_prior", "kandinsky_decoder", "flux"])
def test_peft_count_equals_independent_sum_over_linear_layers(model):
    assert lora_trainable_params(model, 8) == analytic_lora_params(model, 8)


def test_lora_params_command_prints_all_ranks(capsys):
    from msdm.cli import main

    assert main(["lora-params"]) == 0
    out = capsys.readouterr().out
    assert "2.13 M" in out and "11.21 M" in out and "34.14 M" in out and "179.31 M" in out
    assert out.count(" M |") >= 7 * 3
    assert format_table4(table4([4])).splitlines()[-1].split("|")[0].strip() == "4"
