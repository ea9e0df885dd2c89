"""The model a run trains: GPT-2 from scratch in the shape of params.model (its vocabulary padded
to a multiple of 64 rows), or model.base, with a forward pass that returns the loss alone."""

import functools
from types import MethodType

from transformers import GPT2Config, GPT2LMHeadModel
from transformers.modeling_outputs import CausalLMOutput

import tolstoy.model.attention  # noqa: F401  registers train.attn_implementation sdpa_causal with transformers
from tolstoy import StageError
from tolstoy.files import reading
from tolstoy.model.bases import base_directory
from tolstoy.model.loss import causal_lm_loss, with_causal_lm_loss
from tolstoy.model.pretrained import pretrained_model, pretrained_tokenizer

VOCAB_MULTIPLE = 64  # embedding rows: matmuls over the vocabulary run on whole tiles


def load_base(model_params, tokenizer, block_size, attn_implementation):
    base, directory = model_params.base, base_directory(model_params.base, model_params.revision)
    with reading(directory, f"the model of model.base={base!r}"):
        model = pretrained_model(directory, attn_implementation=attn_implementation)
        base_vocab = pretrained_tokenizer(directory).get_vocab()
    if base_vocab != tokenizer.get_vocab():
        raise StageError(
            f"{tokenizer.name_or_path} is not the tokenizer of model.base={base!r}: re-run the tokenizer stage"
        )
    context = model.config.max_position_embeddings
    if block_size > context:
        raise StageError(
            f"tokenize.block_size={block_size} is larger than the context of model.base={base!r} ({context})"
        )
    return model


def scratch_model(model_params, vocab_size, end_of_text_id, pad_id, attn_implementation, vocab_multiple=VOCAB_MULTIPLE):
    """GPT-2 of the shape in params.model, freshly initialised, with vocab_size rounded up to
    vocab_multiple embedding rows: rows no token uses, which the loss leaves out
    (model.tokenizer_tokens) and export_vocabulary removes."""
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=-(-vocab_size // vocab_multiple) * vocab_multiple,
            n_positions=model_params.n_positions,
            n_embd=model_params.n_embd,
            n_layer=model_params.n_layer,
            n_head=model_params.n_head,
            resid_pdrop=model_params.dropout,
            embd_pdrop=model_params.dropout,
            attn_pdrop=model_params.dropout,
            bos_token_id=end_of_text_id,
            eos_token_id=end_of_text_id,
            pad_token_id=pad_id,
            attn_implementation=attn_implementation,
        )
    )
    model.tokenizer_tokens = vocab_size
    return model


def build_model(model_params, tokenizer, block_size, attn_implementation):
    if model_params.base:
        model = load_base(model_params, tokenizer, block_size, attn_implementation)
    else:
        model = scratch_model(
            model_params, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, attn_implementation
        )
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise StageError(f"the tokenizer has {len(tokenizer)} tokens but the model's embeddings have {rows} rows")
    tokenizer.model_max_length = model.config.max_position_embeddings  # exported: clients truncate to the context
    tokenizer.truncation_side = "left"  # a prompt keeps its end, which the continuation follows
    return loss_only(model)


def loss_only(model):
    """Make `model` return only its loss, computed by causal_lm_loss: Trainer uses nothing else, and
    the logits (tokens x vocabulary) never leave it (eager, they are never whole; compiled, they
    stay inside the graph). Other keyword arguments (return_dict, use_cache) do not apply to a
    loss. The exported model is unaffected: save_pretrained stores weights and config."""
    full_forward = type(model).forward
    with_causal_lm_loss(model)  # Trainer then divides by the predicted tokens, labels[..., 1:]

    @functools.wraps(full_forward)  # Trainer reads the signature to pick the dataset's columns
    def forward(self, input_ids=None, labels=None, num_items_in_batch=None, attention_mask=None, **_):
        return CausalLMOutput(
            loss=causal_lm_loss(self, input_ids, labels, num_items_in_batch, attention_mask=attention_mask)
        )

    model.forward = MethodType(forward, model)
    return model


def export_vocabulary(model, tokenizer, model_params):
    """A model from scratch loses its padding rows: as many as the tokenizer has tokens, for clients
    that read the vocabulary size from the config. A base keeps its own size."""
    if not model_params.base:
        model.resize_token_embeddings(len(tokenizer))
    return model
