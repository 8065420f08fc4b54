"""``qruntime quantize --model DIR`` on a Hugging Face causal LM: the causal-LM job end to end.

Why: most users quantize causal LMs, and the command must recognise one from its folder, load it
offline with the tokenizer saved beside it, calibrate on the bundled text and say how far the
next-token distributions moved. A tiny random Llama saved from a config is the model; its
tokenizer is the bundled all-MiniLM-L6-v2 one (no download), with the Llama vocabulary set to
its size. The metrics are checked against independent truth: a config that quantizes nothing
gives KL 0, top-1 1.0 and equal perplexities; the float perplexity equals one computed here with
``cross_entropy`` sentence by sentence; the metric function against a two-token example worked
out by hand. Which job a folder goes to (causal LM, encoder, neither) is checked through the CLI.
"""

import io
import math
import re
from pathlib import Path

import pytest
import torch
import transformers
from qruntime.cli import main
from qruntime.hf_folder import hf_model_kind
from qruntime.job import JobError, QuantizeOptions, import_job_module

ROOT = Path(__file__).resolve().parents[2]
causal_lm_job = import_job_module(ROOT / "examples" / "causal_lm_job")
embedding_job = import_job_module(ROOT / "examples" / "embedding_job")
MINILM = embedding_job.bundled_model_dir()
SMALL = ["--calib-size", "8", "--eval-size", "6"]
NOTHING = "quant_cfg:\n  - {quantizer_name: '*', enable: false}\nalgorithm: max\n"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with the bundled MiniLM tokenizer saved beside it."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM, local_files_only=True)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.5,  # confident next-token distributions: a KL well above rounding
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _run(model: Path, **options: object) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    small = {"calib_size": 8, "eval_size": 6}
    report = causal_lm_job.run(QuantizeOptions(model=model, **{**small, **options}), out, err)  # type: ignore[arg-type]
    return report, out.getvalue(), err.getvalue()


def _row(text: str, run: str) -> list[str]:
    """The cells of the accuracy table's row whose first cell matches ``run`` (a regex)."""
    match = re.search(rf"^({run})\s+(.*)$", text, re.M)
    assert match, text
    return [match.group(1), *match.group(2).split()]


def test_cli_recognises_a_causal_lm_folder_and_reports_next_token_fidelity(
    llama_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(ROOT / "docs")  # the job is found from any directory of the checkout
    assert main(["quantize", "--model", str(llama_dir), *SMALL]) == 0
    out = capsys.readouterr().out
    assert f"model:  {llama_dir} (LlamaForCausalLM, 2.0M parameters)" in out
    assert "8 calibration sentences" in out and "6 held-out evaluation sentences" in out
    assert re.search(r"ok: 0 error\(s\), 0 warning\(s\)", out)
    assert re.search(r"28 of \d+ quantizers enabled; calibration: max", out)
    header = r"run\s+quantizers\s+KV quantizers\s+KL \(nats/token\)\s+top-1 agreement\s+perplexity"
    assert re.search(rf"^{header}$", out, re.M)
    assert "\x1b[" not in out
    float_row = _row(out, "float")
    assert float_row[1:5] == ["0", "0", "-", "-"]
    quantized = _row(out, r"\S*int8_default.yaml")
    assert quantized[1:3] == ["28", "0"]  # 14 Linear weights and inputs, lm_head off
    kl, top1, ppl = float(quantized[3]), float(quantized[4]), float(quantized[5])
    assert kl > 0 and 0 < top1 <= 1 and ppl > 0
    assert "effective bits (weights):" in out


def test_metrics_are_exact_for_a_config_that_quantizes_nothing(
    llama_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "nothing.yaml"
    config.write_text(NOTHING)
    report, out, _ = _run(llama_dir, config=str(config))
    assert report.ok
    fidelity = report.fidelity
    assert fidelity.kl == 0.0 and fidelity.top1 == 1.0
    assert fidelity.perplexity_quantized == fidelity.perplexity_float
    assert _row(out, r"\S*nothing.yaml")[1:5] == ["0", "0", "0", "1.0000"]


def test_float_perplexity_and_fidelity_match_a_direct_computation(llama_dir: Path) -> None:
    """The float perplexity is exp of the mean cross-entropy of every next token of the
    held-out sentences, computed here one unpadded sentence at a time; the quantized model's
    KL and top-1 from its own logits on the same sentences."""
    report, _, _ = _run(llama_dir, config="INT8_DEFAULT")
    assert report.ok
    tokenizer = transformers.AutoTokenizer.from_pretrained(llama_dir, local_files_only=True)
    reference = transformers.AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    sentences = causal_lm_job.data.load_sentences(causal_lm_job.DEFAULT_EVALUATION, 6)
    nll = kl = agree = 0.0
    tokens = 0
    with torch.no_grad():
        for sentence in sentences:
            ids = torch.tensor([tokenizer(sentence)["input_ids"]])
            p = torch.log_softmax(reference(ids).logits[0, :-1].double(), -1)
            q = torch.log_softmax(report.quantized(ids).logits[0, :-1].double(), -1)
            nll += torch.nn.functional.cross_entropy(p, ids[0, 1:], reduction="sum").item()
            kl += (p.exp() * (p - q)).sum().item()
            agree += (p.argmax(-1) == q.argmax(-1)).sum().item()
            tokens += ids.shape[1] - 1
    fidelity = report.fidelity
    assert fidelity.tokens == tokens
    assert fidelity.perplexity_float == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    assert fidelity.kl == pytest.approx(kl / tokens, rel=1e-3, abs=1e-9)
    assert fidelity.top1 == pytest.approx(agree / tokens, abs=1.5 / tokens)
    assert fidelity.kl > 0 and fidelity.perplexity_quantized != fidelity.perplexity_float


def test_next_token_fidelity_on_a_two_token_example() -> None:
    """One sentence of two tokens [0, 1]: one prediction. The float model gives the second
    token probability 3/4 (logits ln 1, ln 3), the quantized one 1/4 (ln 3, ln 1). By hand:
    perplexities 4/3 and 4, KL = 1/4 ln(1/3) + 3/4 ln 3 = ln(3)/2, top-1 disagrees."""
    float_logits = torch.tensor([[0.0, math.log(3.0)]])
    quantized_logits = torch.tensor([[math.log(3.0), 0.0]])
    fidelity = causal_lm_job.next_token_fidelity(
        torch.log_softmax(float_logits, -1),
        torch.log_softmax(quantized_logits, -1),
        torch.tensor([1]),
    )
    assert fidelity.tokens == 1
    assert fidelity.perplexity_float == pytest.approx(4 / 3)
    assert fidelity.perplexity_quantized == pytest.approx(4.0)
    assert fidelity.kl == pytest.approx(math.log(3.0) / 2)
    assert fidelity.top1 == 0.0


def test_log_probs_skip_padding_and_the_last_token() -> None:
    """Right-padded batches: only positions whose next token is real are predicted."""

    class Echo(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> object:
            logits = torch.nn.functional.one_hot(input_ids, 5).float() * 10
            return type("Out", (), {"logits": logits})()

    batch = {
        "input_ids": torch.tensor([[1, 2, 3], [4, 2, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
    }
    log_probs, targets = causal_lm_job.next_token_log_probs(Echo(), [batch])
    assert targets.tolist() == [2, 3, 2]
    assert log_probs.argmax(-1).tolist() == [1, 2, 4]  # each position's own token


def test_kv_cache_row_on_llama_attention(llama_dir: Path) -> None:
    """--kv-cache FP8_KV_CFG: 2 LlamaAttention layers, a k and a v bmm quantizer each."""
    report, out, _ = _run(llama_dir, kv_cache="FP8_KV_CFG")
    assert report.ok and report.kv_quantizers == 4
    row = _row(out, r"\+ FP8_KV_CFG")
    assert row[1:3] == ["32", "4"]
    assert float(row[3]) == pytest.approx(report.kv_fidelity.kl, rel=1e-3)
    assert report.kv_fidelity.kl != report.fidelity.kl


def test_progress_bars_only_when_asked_off_a_terminal(llama_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "nothing.yaml"
    config.write_text(NOTHING)
    _, _, err = _run(llama_dir, config=str(config))
    assert err == ""  # stderr is not a terminal: no bars, no "\r" redraws
    _, _, err = _run(llama_dir, config=str(config), progress=True)
    assert "\rcalibrate" in err and "\rpredict (float)" in err


def test_a_folder_without_a_tokenizer_is_one_clear_error(
    llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    folder = tmp_path / "no_tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((llama_dir / name).read_bytes())
    assert main(["quantize", "--model", str(folder), *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tokenizer in the model folder" in err[0], err


def test_an_encoder_folder_still_goes_to_the_embedding_job(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert hf_model_kind(MINILM) == "text-encoder"
    assert main(["quantize", "--model", str(MINILM), "--config", "INT8_WEIGHT_ONLY", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "(BertModel, 22.7M parameters)" in out and "cosine similarity vs float" in out


def test_model_kinds_from_config_json(tmp_path: Path, llama_dir: Path) -> None:
    assert hf_model_kind(llama_dir) == "causal-lm"

    def folder(name: str, config: transformers.PretrainedConfig) -> Path:
        path = tmp_path / name
        config.save_pretrained(path)
        return path

    gpt2 = folder("gpt2", transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4))
    assert hf_model_kind(gpt2) == "causal-lm"  # no architectures: the model_type decides
    bert_lm = folder("bert_lm", transformers.BertConfig(architectures=["BertLMHeadModel"]))
    assert hf_model_kind(bert_lm) == "causal-lm"
    assert hf_model_kind(folder("bert", transformers.BertConfig())) == "text-encoder"
    with pytest.raises(JobError, match="neither a causal LM"):
        hf_model_kind(folder("vit", transformers.ViTConfig(architectures=["ViTModel"])))
    with pytest.raises(JobError, match=r"no config\.json"):
        hf_model_kind(tmp_path)


def test_a_folder_that_is_neither_is_one_clear_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    transformers.ViTConfig(architectures=["ViTModel"]).save_pretrained(tmp_path)
    assert main(["quantize", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("qruntime quantize: error: ")
    assert "a vit model (ViTModel) is neither a causal LM" in err[0] and "--job" in err[0]


def test_the_causal_lm_job_needs_a_model() -> None:
    with pytest.raises(JobError, match="needs --model DIR"):
        causal_lm_job.run(QuantizeOptions(), io.StringIO(), io.StringIO())


def test_saved_state_restores_onto_a_fresh_model(llama_dir: Path, tmp_path: Path) -> None:
    from qruntime import quantizer_states, restore_state

    state = tmp_path / "int8.safetensors"
    report, out, _ = _run(llama_dir, save_state=state)
    assert report.ok and f"quantizer state: {state}" in out
    fresh = transformers.AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    restore_state(fresh, state)
    saved, restored = quantizer_states(report.quantized), quantizer_states(fresh)
    calibrated = [name for name, q in saved.items() if q["amax"] is not None]
    assert len(calibrated) == 28
    for name in calibrated:
        assert torch.equal(saved[name]["amax"], restored[name]["amax"]), name


def test_lint_errors_stop_before_the_weights_are_read(
    llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    config = tmp_path / "bad.yaml"
    config.write_text(
        "quant_cfg:\n"
        "  - {quantizer_name: '*', enable: false}\n"
        "  - {quantizer_name: '*weight_quantizer', parent_class: nn.Linaer, cfg: {num_bits: 8}}\n"
    )
    assert main(["quantize", "--model", str(llama_dir), "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 1 error(s)" in out and "bad.yaml:3:" in out
    assert "nothing was quantized" in out and "plan:" not in out
