"""`train.attn_implementation: sdpa_causal`: transformers' SDPA attention told that attention is causal,
with no mask.

Where transformers cannot tell torch.compile's tracing from torch.export's (older transformers, or a
torch without the fix its masking_utils names), it hands SDPA an explicit T x T causal mask while
compiling, and with a mask SDPA cannot pick its flash attention kernels. A training block is whole,
with no padding: causality is the only mask it needs. Registered with transformers'
AttentionInterface on import; an implementation without a mask function of its own gets no mask."""

from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

SDPA_CAUSAL = "sdpa_causal"


def causal_sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    return sdpa_attention_forward(module, query, key, value, None, is_causal=True, **kwargs)


AttentionInterface.register(SDPA_CAUSAL, causal_sdpa_attention)
