"""train.attn_implementation sdpa_causal: the attention sdpa and eager compute on whole blocks, with
SDPA told it is causal and given no mask, also as torch.compile traces the model."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from tests.helpers import needs_cuda, params_with
from tolstoy.config.params import section
from tolstoy.model.build import loss_only, scratch_model

SHAPE = section("model", {**params_with()["model"], "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64})
VOCAB = 500
IDS = torch.randint(0, VOCAB, (3, 64), generator=torch.Generator().manual_seed(1))


def model_with(attention):
    torch.manual_seed(0)
    return loss_only(scratch_model(SHAPE, VOCAB, 0, 0, attention))


def loss_and_gradients(model, ids=IDS):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), [parameter.grad for parameter in model.parameters()]


@pytest.mark.parametrize("other", ["sdpa", "eager"])
def test_causal_sdpa_computes_what_the_masked_attentions_compute(other):
    loss, gradients = loss_and_gradients(model_with("sdpa_causal"))
    other_loss, other_gradients = loss_and_gradients(model_with(other))
    assert loss == pytest.approx(other_loss, rel=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(gradients, other_gradients, strict=True))


def test_compiled_causal_sdpa_gives_sdpa_no_mask():
    calls = []

    def recording_backend(graph, example_inputs):  # what torch.compile traced, run as traced
        calls.extend(node.kwargs for node in graph.graph.nodes if "scaled_dot_product" in str(node.target))
        return graph.forward

    torch.compile(model_with("sdpa_causal"), backend=recording_backend)(input_ids=IDS, labels=IDS)
    assert len(calls) == SHAPE.n_layer
    assert all(call["attn_mask"] is None and call["is_causal"] is True for call in calls)


@needs_cuda
def test_compiled_causal_sdpa_trains_on_the_flash_kernel():
    model = model_with("sdpa_causal").cuda()
    ids = IDS.cuda()
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = loss_and_gradients(torch.compile(model), ids)
    eager_loss, _ = loss_and_gradients(model_with("eager"))
    assert loss == pytest.approx(eager_loss, rel=2e-2)  # bf16 keeps 8 bits of mantissa


def test_a_saved_model_does_not_name_causal_sdpa(tmp_path):
    """Any transformers client loads the exported model: its config leaves the attention out."""
    model_with("sdpa_causal").save_pretrained(tmp_path)
    assert "sdpa_causal" not in (tmp_path / "config.json").read_text()
