"""Small torch models with the module structures quantization configs are written for.

Shared by the compile and runtime conformance tests and by the example-manifest generator, so
that every check runs on the same architectures: a Llama-style decoder, a MoE, a vision-language
model, a CNN, recurrent nets, ``nn.Linear`` subclasses, and fused-expert quantizer lists.
"""

import torch
from torch import nn

H = 16  # hidden size: small, but a multiple of 16 so NVFP4/MX blocks fit


class RMSNorm(nn.Module):
    """Not a registered module type: it must get no quantizers."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Attention(nn.Module):
    def __init__(self, dim: int = H):
        super().__init__()
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        att = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        return self.o_proj(att @ v)


class MLP(nn.Module):
    def __init__(self, dim: int = H, inner: int = 2 * H):
        super().__init__()
        self.gate_proj = nn.Linear(dim, inner, bias=False)
        self.up_proj = nn.Linear(dim, inner, bias=False)
        self.down_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.input_layernorm = RMSNorm(H)
        self.self_attn = Attention()
        self.post_attention_layernorm = RMSNorm(H)
        self.mlp = mlp

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, layers: list[nn.Module], vocab: int = 32):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, H)
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(H)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class LlamaLike(nn.Module):
    """``model.layers.N.{self_attn,mlp}.*_proj``, ``model.embed_tokens``, ``lm_head``."""

    def __init__(self, n_layers: int = 2, vocab: int = 32):
        super().__init__()
        self.model = Backbone([DecoderLayer(MLP()) for _ in range(n_layers)], vocab)
        self.lm_head = nn.Linear(H, vocab, bias=False)

    def forward(self, ids):
        return self.lm_head(self.model(ids))


class SparseMoe(nn.Module):
    """Router ``gate`` + ``experts.E.{gate,up,down}_proj`` + a shared expert and its gate."""

    def __init__(self, n_experts: int = 4, top_k: int = 2):
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(H, n_experts, bias=False)
        self.experts = nn.ModuleList([MLP(H, H) for _ in range(n_experts)])
        self.shared_expert = MLP(H, H)
        self.shared_expert_gate = nn.Linear(H, 1, bias=False)

    def forward(self, x):
        weights = torch.softmax(self.gate(x), dim=-1)
        top, idx = weights.topk(self.top_k, dim=-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            mask = (idx == e).any(-1, keepdim=True)
            w = (top * (idx == e)).sum(-1, keepdim=True)
            out = out + torch.where(mask, w * expert(x), torch.zeros_like(x))
        return out + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)


class MoELike(nn.Module):
    def __init__(self, n_layers: int = 2, n_experts: int = 4, vocab: int = 32):
        super().__init__()
        self.model = Backbone([DecoderLayer(SparseMoe(n_experts)) for _ in range(n_layers)], vocab)
        self.lm_head = nn.Linear(H, vocab, bias=False)

    def forward(self, ids):
        return self.lm_head(self.model(ids))


class VisionBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(H)
        self.attn = Attention()
        self.layer_norm2 = nn.LayerNorm(H)
        self.mlp = nn.Sequential(nn.Linear(H, 2 * H), nn.GELU(), nn.Linear(2 * H, H))

    def forward(self, x):
        x = x + self.attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionTower(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, H, kernel_size=4, stride=4)
        self.blocks = nn.ModuleList([VisionBlock()])
        self.post_layernorm = nn.LayerNorm(H)

    def forward(self, pixels):
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.post_layernorm(x)


class VLMLike(nn.Module):
    """``vision_tower`` + ``multi_modal_projector`` + a Llama-style ``language_model``."""

    def __init__(self):
        super().__init__()
        self.vision_tower = VisionTower()
        self.multi_modal_projector = nn.Sequential(nn.Linear(H, H), nn.GELU(), nn.Linear(H, H))
        self.language_model = LlamaLike(n_layers=1)

    def forward(self, pixels, ids):
        image = self.multi_modal_projector(self.vision_tower(pixels))
        text = self.language_model.model.embed_tokens(ids)
        x = torch.cat([image, text], dim=1)
        for layer in self.language_model.model.layers:
            x = layer(x)
        return self.language_model.lm_head(self.language_model.model.norm(x))


class ConvNet(nn.Module):
    """Conv1d/2d, ConvTranspose2d, BatchNorm, InstanceNorm, LeakyReLU, pooling, a Linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.avg = nn.AdaptiveAvgPool2d(4)
        self.conv1d = nn.Conv1d(8, 16, 3, padding=1)
        self.bn1d = nn.BatchNorm1d(16)
        self.avg1d = nn.AvgPool1d(2)
        self.head = nn.Linear(16 * 8, 10)

    def forward(self, x):
        x = self.pool(self.act(self.bn(self.stem(x))))
        x = self.avg(self.inorm(self.up(x)))
        x = self.avg1d(self.bn1d(self.conv1d(x.flatten(2))))
        return self.head(x.flatten(1))


class RecurrentNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 8, num_layers=2, bidirectional=True, proj_size=2, batch_first=True)
        self.gru = nn.GRU(4, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        a, _ = self.lstm(x)
        b, _ = self.gru(x)
        return self.head(b) + a.sum()


class MyLinear(nn.Linear):
    """Inherits ``forward``: converted under its own class, not matched by ``nn.Linear``."""


class MyOwnForwardLinear(nn.Linear):
    """Overrides ``forward``: Model Optimizer gives it no quantizers at all."""

    def forward(self, x):
        return super().forward(x) * 1.0


class SubclassNet(nn.Module):
    """One module of each converted kind, an Embedding and a Linear subclass that inherits
    ``forward`` (the model of the conformance experiments), plus a Linear subclass with its own
    forward."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv", nn.Conv2d(3, 8, 3, padding=1))
        self.features.add_module("bn", nn.BatchNorm2d(8))
        self.features.add_module("act", nn.LeakyReLU())
        self.features.add_module("pool", nn.AdaptiveAvgPool2d(1))
        self.mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32))
        self.norm = nn.LayerNorm(32)
        self.sub = MyLinear(32, 32)
        self.own = MyOwnForwardLinear(32, 32)
        self.emb = nn.Embedding(10, 32)
        self.lm_head = nn.Linear(32, 16)

    def forward(self, x):
        h = self.features(x).flatten(1)
        h = self.norm(self.mlp(h))
        h = self.own(self.sub(h)) + self.emb(torch.arange(x.shape[0]) % 10)
        return self.lm_head(h)


class FusedExperts(nn.Module):
    """Experts stored as 3-D parameters (as in recent Hugging Face MoE code)."""

    def __init__(self, n_experts: int = 2):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.randn(n_experts, 2 * H, H) * 0.1)
        self.down_proj = nn.Parameter(torch.randn(n_experts, H, H) * 0.1)

    def forward(self, x):
        out = 0
        for e in range(self.gate_up_proj.shape[0]):
            g, u = (x @ self.gate_up_proj[e].T).chunk(2, dim=-1)
            out = out + (nn.functional.silu(g) * u) @ self.down_proj[e].T
        return out


class FusedMoENet(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(H, H)
        self.experts = FusedExperts()

    def forward(self, x):
        return self.experts(self.proj(x))


def example_inputs(name: str, batch: int = 2, seed: int = 0):
    """A deterministic input batch for each zoo model."""
    g = torch.Generator().manual_seed(seed)
    if name in ("llama", "moe"):
        return (torch.randint(0, 32, (batch, 8), generator=g),)
    if name == "vlm":
        return (
            torch.randn(batch, 3, 8, 8, generator=g),
            torch.randint(0, 32, (batch, 4), generator=g),
        )
    if name == "cnn":
        return (torch.randn(batch, 3, 16, 16, generator=g),)
    if name == "rnn":
        return (torch.randn(batch, 5, 4, generator=g),)
    if name == "subclass":
        return (torch.randn(batch, 3, 8, 8, generator=g),)
    if name == "fused":
        return (torch.randn(batch, 4, H, generator=g),)
    raise KeyError(name)


ZOO = {
    "llama": LlamaLike,
    "moe": MoELike,
    "vlm": VLMLike,
    "cnn": ConvNet,
    "rnn": RecurrentNet,
    "subclass": SubclassNet,
    "fused": FusedMoENet,
}


def forward_loop(name: str, seeds: tuple[int, ...] = (0, 1)):
    """A forward loop over ``example_inputs(name)`` batches, one per seed."""
    batches = [example_inputs(name, seed=s) for s in seeds]

    def loop(model: nn.Module) -> None:
        for batch in batches:
            model(*batch)

    return loop


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ZOO[name]().eval()
