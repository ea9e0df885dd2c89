"""A causal language model's loss, one implementation for training and evaluation. Run eagerly,
the LM head and the cross-entropy go in chunks of rows, so that the logits (tokens x vocabulary,
upcast to fp32 by transformers' loss) never exist whole: in training each chunk's gradients are
computed in the forward pass and its logits freed at once, as in Liger's and torch's fused linear
cross-entropy. Under torch.compile the loss is written whole, and the compiler fuses the upcast
into the cross-entropy's kernels: measured, that is faster and smaller than compiled chunks
(bench/README.md). Matmuls run in the autocast precision; log-softmax and the loss in fp32."""

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # transformers' label for "no target here"
LOGITS_BYTES_PER_CHUNK = 1 << 27  # 128 MiB of fp32 logits at a time


def with_causal_lm_loss(model):
    """Tell transformers this is a causal LM loss (GPT-2's class name does not say so): Trainer then
    counts the predicted tokens as labels[..., 1:] when it scales the loss of a batch."""
    model.loss_type = "ForCausalLM"
    return model


def chunk_rows(vocab_size):
    return max(1, LOGITS_BYTES_PER_CHUNK // (4 * vocab_size))


def vocabulary_logits(hidden, weight, tokens):
    """fp32 logits, rows past the tokenizer's `tokens` (padding) at -inf: they take no probability
    and get no gradient, so a model trimmed to the tokenizer scores exactly as trained. A pointwise
    mask, not a slice assignment: compiled, it fuses into the cross-entropy's kernels, where a
    slice assignment makes the whole fp32 logits exist (bench/README.md)."""
    logits = (hidden @ weight.T).float()
    if tokens < logits.shape[-1]:
        logits.masked_fill_(torch.arange(logits.shape[-1], device=logits.device) >= tokens, float("-inf"))
    return logits


def chunk_loss(hidden, weight, targets, tokens, scale=None):
    """Summed cross-entropy of one chunk; with `scale`, also the gradients of `scale` times it with
    respect to hidden and weight."""
    logits = vocabulary_logits(hidden, weight, tokens)
    log_norm = logits.logsumexp(-1)
    valid = targets != IGNORE_INDEX
    targets = torch.where(valid, targets, 0)
    loss = ((log_norm - logits.gather(1, targets[:, None]).squeeze(1)) * valid).sum()
    if scale is None:
        return loss, None, None
    grad = logits.sub_(log_norm[:, None]).exp_()  # softmax, in the logits' memory
    grad[torch.arange(len(targets), device=grad.device), targets] -= 1
    grad.mul_((valid * scale)[:, None])
    return loss, grad @ weight, grad.T @ hidden


class ChunkedLMHeadLoss(torch.autograd.Function):
    """scale * summed cross-entropy of hidden @ weight.T against targets; the gradients are made in
    forward, chunk by chunk, and handed out by backward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, tokens, scale):
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        rows = chunk_rows(weight.shape[0])
        for start in range(0, len(targets), rows):
            part = slice(start, start + rows)
            loss, grad_part, grad_weight_part = chunk_loss(hidden[part], weight, targets[part], tokens, scale)
            total += loss
            grad_hidden[part] = grad_part
            grad_weight += grad_weight_part
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total * scale

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output, grad_weight * grad_output, None, None, None


def causal_lm_loss(model, input_ids, labels, num_items_in_batch=None, **body_kwargs):
    """Mean next-token loss of `model` (a transformers causal LM without an LM-head bias): labels[:, 1:]
    predicted from input_ids; the sum is divided by num_items_in_batch when Trainer gives it. Over
    the first model.tokenizer_tokens rows of the vocabulary where the model says so (padding rows)."""
    hidden = model.base_model(input_ids=input_ids, **body_kwargs).last_hidden_state
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    targets = labels[:, 1:].reshape(-1).to(hidden.device)
    weight = model.get_output_embeddings().weight
    tokens = getattr(model, "tokenizer_tokens", weight.shape[0])
    count = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
    if torch.compiler.is_compiling():
        return (
            F.cross_entropy(
                vocabulary_logits(hidden, weight, tokens), targets, ignore_index=IGNORE_INDEX, reduction="sum"
            )
            / count
        )
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return ChunkedLMHeadLoss.apply(hidden, weight, targets, tokens, 1.0 / count)
    rows = chunk_rows(weight.shape[0])
    total = sum(
        chunk_loss(hidden[start : start + rows], weight, targets[start : start + rows], tokens)[0]
        for start in range(0, len(targets), rows)
    )
    return total / count
