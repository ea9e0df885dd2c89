"""The model a run trains: GPT-2 from scratch in the shape of params.model, or model.base, with a
forward pass that returns the loss alone."""
import functools
from types import MethodType

from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel
from transformers.modeling_outputs import CausalLMOutput

from stages.base import base_directory
from stages.causal_lm import with_causal_lm_loss
from stages.common import StageError, reading
from stages.paths import TOKENIZER


def load_base(model_params, tokenizer, block_size, attn_implementation):
    base, directory = model_params["base"], base_directory(model_params)
    with reading(directory, f"the model of model.base={base!r}"):
        model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=False, attn_implementation=attn_implementation)
        base_vocab = AutoTokenizer.from_pretrained(directory).get_vocab()
    if base_vocab != tokenizer.get_vocab():
        raise StageError(f"{TOKENIZER} is not the tokenizer of model.base={base!r}: re-run the tokenizer stage")
    context = model.config.max_position_embeddings
    if block_size > context:
        raise StageError(f"tokenize.block_size={block_size} is larger than the context of model.base={base!r} ({context})")
    return model


def scratch_model(model_params, vocab_size, end_of_text_id, pad_id, attn_implementation):
    """GPT-2 of the shape in params.model, freshly initialised."""
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=vocab_size,
        n_positions=model_params["n_positions"],
        n_embd=model_params["n_embd"],
        n_layer=model_params["n_layer"],
        n_head=model_params["n_head"],
        resid_pdrop=model_params["dropout"],
        embd_pdrop=model_params["dropout"],
        attn_pdrop=model_params["dropout"],
        bos_token_id=end_of_text_id,
        eos_token_id=end_of_text_id,
        pad_token_id=pad_id,
        attn_implementation=attn_implementation,
    ))


def build_model(model_params, tokenizer, block_size, attn_implementation):
    if model_params["base"]:
        model = load_base(model_params, tokenizer, block_size, attn_implementation)
    else:
        model = scratch_model(model_params, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, attn_implementation)
    with_causal_lm_loss(model)
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise StageError(f"the tokenizer has {len(tokenizer)} tokens but the model's embeddings have {rows} rows")
    tokenizer.model_max_length = model.config.max_position_embeddings  # exported: clients truncate to the context
    tokenizer.truncation_side = "left"  # a prompt keeps its end, which the continuation follows
    return loss_only(model)


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
