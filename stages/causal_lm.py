"""Which loss a model computes, said to transformers: GPT-2's class name does not say it is a
causal language model's."""


def with_causal_lm_loss(model):
    """The loss predicts labels[..., 1:]. Told nothing, transformers warns that it falls back to that
    loss, and Trainer divides the summed loss by every label: low by 1/block_size in training and evaluation."""
    model.loss_type = "ForCausalLM"
    return model
