"""Tiny Hugging Face models for the conformance suites: builders, calibration loops, eval batches.

Why a module of its own: every suite that compares qruntime with Model Optimizer on real
``transformers`` architectures needs the same small, deterministic models (seeded weights,
seeded token batches), and the same models must be buildable on the meta device for
``qruntime.inventory``. The sizes follow the smallest configs on which Model Optimizer's plugins
show all their sites: grouped-query attention (4 query heads, 2 KV heads, head dim 8), fused MoE
experts (4 experts, top 2), GPT-2's ``Conv1D``, LayerNorm inputs, an encoder-decoder with
cross-attention (T5), a vision-language model whose vision tower the presets exclude (Llava).

Names: ``llama``, ``gpt2``, ``bert``, ``mixtral``, ``qwen3_moe``, ``qwen2_moe`` (a shared
expert and its gate beside the fused experts), ``opt``, ``llava`` (a CLIP vision tower and a Llama), ``t5`` (attention implementation
"sdpa"); ``llama_eager`` and ``bert_eager`` are the same models under "eager"
(where BERT's softmax probabilities reach ``p_bmm_quantizer``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers
from torch import nn

__all__ = [
    "BATCH",
    "CALIBRATION_SEEDS",
    "EVAL_SEED",
    "HF_MODELS",
    "SDPA_MODELS",
    "build",
    "example_inputs",
    "forward_loop",
    "outputs",
]

VOCAB = 128
BATCH = (2, 8)  # (batch, sequence) of every token batch
CALIBRATION_SEEDS = (0, 1)
EVAL_SEED = 2


@dataclass(frozen=True)
class HFModel:
    """How to build one tiny model: its ``transformers`` class, its config's keyword arguments
    and the attention implementation; ``encoder_decoder`` models also get decoder tokens."""

    model_class: str
    config_class: str
    config: dict
    attn_implementation: str = "sdpa"
    encoder_decoder: bool = False
    padded: bool = False  # an attention mask with padding in the second row (encoders)
    image: bool = False  # a vision-language model: pixel values and image tokens


_LLAMA = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
_GPT2 = {
    "vocab_size": VOCAB,
    "n_embd": 32,
    "n_layer": 2,
    "n_head": 4,
    "n_positions": 64,
    "bos_token_id": 0,
    "eos_token_id": 0,
}
_BERT = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
_MIXTRAL = {**_LLAMA, "num_local_experts": 4, "num_experts_per_tok": 2}
_QWEN3_MOE = {
    **_LLAMA,
    "moe_intermediate_size": 16,
    "head_dim": 8,
    "num_experts": 4,
    "num_experts_per_tok": 2,
}
_QWEN2_MOE = {
    **_LLAMA,
    "moe_intermediate_size": 16,
    "shared_expert_intermediate_size": 32,
    "num_experts": 4,
    "num_experts_per_tok": 2,
}
_OPT = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "ffn_dim": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
    "word_embed_proj_dim": 32,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 0,
}
IMAGE_TOKEN = 3
IMAGE_TOKENS = 4  # a 16x16 image in 8x8 patches, the CLS feature dropped
_LLAVA = {
    "vision_config": {
        "model_type": "clip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 16,
        "patch_size": 8,
        "projection_dim": 32,
    },
    "text_config": {"model_type": "llama", **_LLAMA},
    "image_token_index": IMAGE_TOKEN,
    "projector_hidden_act": "gelu",
}
_T5 = {
    "vocab_size": VOCAB,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "decoder_start_token_id": 0,
}

HF_MODELS: dict[str, HFModel] = {
    "llama": HFModel("LlamaForCausalLM", "LlamaConfig", _LLAMA),
    "gpt2": HFModel("GPT2LMHeadModel", "GPT2Config", _GPT2),
    "bert": HFModel("BertForMaskedLM", "BertConfig", _BERT, padded=True),
    "mixtral": HFModel("MixtralForCausalLM", "MixtralConfig", _MIXTRAL),
    "qwen3_moe": HFModel("Qwen3MoeForCausalLM", "Qwen3MoeConfig", _QWEN3_MOE),
    "qwen2_moe": HFModel("Qwen2MoeForCausalLM", "Qwen2MoeConfig", _QWEN2_MOE),
    "opt": HFModel("OPTForCausalLM", "OPTConfig", _OPT),
    "llava": HFModel("LlavaForConditionalGeneration", "LlavaConfig", _LLAVA, image=True),
    "t5": HFModel("T5ForConditionalGeneration", "T5Config", _T5, encoder_decoder=True),
    "llama_eager": HFModel("LlamaForCausalLM", "LlamaConfig", _LLAMA, "eager"),
    "bert_eager": HFModel("BertForMaskedLM", "BertConfig", _BERT, "eager", padded=True),
}
#: one entry per architecture (the eager variants have the same sites as their sdpa twins)
SDPA_MODELS = [name for name, spec in HF_MODELS.items() if spec.attn_implementation == "sdpa"]


def build(name: str, *, seed: int = 0) -> nn.Module:
    """Model ``name`` with weights drawn under ``torch.manual_seed(seed)``, in eval mode.

    Built under the current default device, so ``with torch.device("meta"): build(name)`` gives
    the weightless twin that ``qruntime.inventory`` must describe identically.
    """
    spec = HF_MODELS[name]
    config_cls = getattr(transformers, spec.config_class)
    model_cls = getattr(transformers, spec.model_class)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = config_cls(**spec.config, attn_implementation=spec.attn_implementation)
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval()


def example_inputs(name: str, seed: int) -> dict[str, torch.Tensor]:
    """One batch of random tokens (keyword arguments of the model's forward), from ``seed``."""
    spec = HF_MODELS[name]
    gen = torch.Generator().manual_seed(seed)
    inputs = {"input_ids": torch.randint(0, VOCAB, BATCH, generator=gen)}
    if spec.image:
        ids = torch.randint(IMAGE_TOKEN + 1, VOCAB, BATCH, generator=gen)
        ids[:, 1 : 1 + IMAGE_TOKENS] = IMAGE_TOKEN
        inputs = {"input_ids": ids, "pixel_values": torch.randn(BATCH[0], 3, 16, 16, generator=gen)}
    if spec.padded:
        mask = torch.ones(BATCH, dtype=torch.long)
        mask[1, -3:] = 0
        inputs["attention_mask"] = mask
    if spec.encoder_decoder:
        decoder = (BATCH[0], BATCH[1] - 2)
        inputs["decoder_input_ids"] = torch.randint(0, VOCAB, decoder, generator=gen)
    return inputs


def forward_loop(name: str) -> Callable[[nn.Module], None]:
    """The calibration loop: the model on the batches of :data:`CALIBRATION_SEEDS`."""
    batches = [example_inputs(name, seed) for seed in CALIBRATION_SEEDS]

    def loop(model: nn.Module) -> None:
        with torch.no_grad():
            for batch in batches:
                model(**batch)

    return loop


def outputs(model: nn.Module, name: str) -> torch.Tensor:
    """The logits on the unseen eval batch (:data:`EVAL_SEED`)."""
    with torch.no_grad():
        return model(**example_inputs(name, EVAL_SEED)).logits
