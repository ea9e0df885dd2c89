import math
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM

from bench import sites
from tests.helpers import FOREIGN, ROOT, call_stage, free_port, needs_cuda, tiny_params, write_author, write_params
from tolstoy import StageError
from tolstoy.data.blocks import Blocks, bits_per_char
from tolstoy.evaluation.scores import validation_loss
from tolstoy.files import read_json


def with_groups(**groups):
    """The project's params.yaml with these groups settings."""
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    params["groups"].update(**groups)
    write_params(".", params)


def test_metrics_are_consistent(built):
    metrics = read_json(built / "metrics/eval.json")
    meta = read_json(built / "data/tokens/meta.json")
    assert 0 < metrics["val_loss"] < math.log(meta["vocab_size"]) + 1
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["val_loss"]), rel=1e-3)
    chars_per_token = meta["val"]["chars"] / meta["val"]["tokens"]
    assert metrics["bits_per_char"] == pytest.approx(metrics["val_loss"] / math.log(2) / chars_per_token, rel=1e-4)
    assert metrics["val_blocks"] == min(16, meta["val"]["blocks"])


def test_every_block_when_max_blocks_is_zero(built_copy):
    params = tiny_params([])
    params["evaluate"].update(max_blocks=0, batch_size=7)  # a last batch shorter than the others
    write_params(".", params)
    call_stage("evaluate")
    assert read_json("metrics/eval.json")["val_blocks"] == read_json("data/tokens/meta.json")["val"]["blocks"]


def test_each_group_is_scored_and_the_style_gap_is_against_the_reference(built_copy, tmp_path):
    unseen = write_author(tmp_path / "shared/unseen", [sites.paragraphs(f"unseen-{i}", 60) for i in (1, 2)])
    foreign = write_author(tmp_path / "shared/foreign", [FOREIGN])
    with_groups(sources={"unseen": [unseen], "foreign": [foreign]}, reference="unseen", max_blocks=0)
    call_stage("groups")
    call_stage("evaluate")
    metrics = read_json("metrics/eval.json")
    model = AutoModelForCausalLM.from_pretrained("models/model").eval()
    for name in ("unseen", "foreign"):
        blocks = Blocks(f"data/groups/{name}/tokens", "text")
        assert metrics["groups"][name] == pytest.approx(
            bits_per_char(validation_loss(model, blocks, 16), blocks.chars_per_token), abs=1e-5
        )
    assert read_json("data/groups/groups.json")["unseen"]["documents"] == 2
    assert metrics["style_gap"]["foreign"] == pytest.approx(
        metrics["groups"]["foreign"] - metrics["groups"]["unseen"], abs=1e-5
    )
    assert metrics["style_gap"]["mean"] == metrics["style_gap"]["foreign"] and metrics["style_gap"]["foreign"] > 0


def test_a_group_is_fetched_through_fetch_mirror(built_copy, site, monkeypatch):
    """Unmirrored, the group's URL is a loopback port where nothing listens: only the mirror serves it."""
    base, server, pages = site
    nowhere = f"http://127.0.0.1:{free_port()}/"
    monkeypatch.setenv("FETCH_MIRROR", f"{nowhere}={base}")
    with_groups(sources={"mirrored": [nowhere + pages[0][0]]})
    call_stage("groups")
    assert read_json("data/groups/groups.json")["mirrored"]["documents"] == 1
    assert [path for path, _ in server.requests] == ["/" + pages[0][0]]


def test_without_groups_eval_has_no_group_figures(built):
    assert "groups" not in read_json(built / "metrics/eval.json") and read_json(built / "data/groups/groups.json") == {}


def test_a_group_too_short_for_a_block_is_named(built_copy, tmp_path):
    short = write_author(tmp_path / "shared/short", [["Да."] * 1])
    with_groups(sources={"short": [short]})
    clean = read_json("metrics/clean.json")
    with pytest.raises(
        StageError,
        match=r"groups.sources.short: .*yields \d+ characters of text|groups.sources.short: the group's text has",
    ):
        call_stage("groups")
    assert read_json("metrics/clean.json") == clean  # the training pages' outputs are untouched


@pytest.mark.parametrize(
    "groups, message",
    [
        ({"sources": {"a": ["no/such/*.txt"]}}, r"groups.sources.a: no/such/\*.txt matches no file"),
        ({"sources": {"bad name": ["x.txt"]}}, r"groups.sources=.* must be a mapping of group names"),
        ({"reference": "b"}, r"groups.reference='b' must be '' or one of groups.sources"),
        ({"sources": {"a": ["x.txt", "./x.txt"]}}, r"groups.sources.a lists the same page twice: x.txt and ./x.txt"),
    ],
)
def test_bad_group_params(built_copy, tmp_path, groups, message):
    with_groups(**groups)
    with pytest.raises(StageError, match=message):
        call_stage("groups")


@needs_cuda
def test_on_a_gpu_evaluate_runs_there_and_agrees_with_the_cpu(built):
    """The GPU's loss equals the CPU's to 1e-4 relative (fp32 either way); a use_cpu config keeps it on the CPU."""
    from tolstoy.device import inference_device

    assert inference_device(ROOT / "configs/accelerate/single.yaml") == "cuda"
    assert inference_device(ROOT / "configs/accelerate/cpu-ddp.yaml") == "cpu"
    blocks = Blocks(built / "data/tokens", "val", limit=8)
    model = AutoModelForCausalLM.from_pretrained(built / "models/model").eval()
    on_cpu = validation_loss(model, blocks, 4)
    assert validation_loss(model.to("cuda"), blocks, 4) == pytest.approx(on_cpu, rel=1e-4)
