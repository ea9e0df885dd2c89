"""The forward pass training runs: the model's own, returning the loss alone."""
import functools
from types import MethodType

from transformers.modeling_outputs import CausalLMOutput


def loss_only(model):
    """Make `model` return only its loss. Trainer uses nothing else, and a returned logits tensor
    (tokens x vocabulary) costs at every step: compiled, the graph has to write it out, and
    accelerate's mixed precision copies it to fp32. Kept out of the output, the logits stay inside
    the compiled graph. The exported model is unaffected: save_pretrained stores weights and config."""
    full_forward = type(model).forward

    @functools.wraps(full_forward)  # Trainer reads the signature to pick the dataset's columns
    def forward(self, *args, **kwargs):
        return CausalLMOutput(loss=full_forward(self, *args, **kwargs).loss)

    model.forward = MethodType(forward, model)
    return model
