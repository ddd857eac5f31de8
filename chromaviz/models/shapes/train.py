"""Train the bundled text-to-pixels model on the procedural shapes dataset.

``python -m chromaviz.models.shapes.train --out runs/shapes --steps 4000`` trains a small ``UNet2DConditionModel``
and ``CLIPTextModel`` together (v-prediction, or ε with ``--prediction-type epsilon``; a weighted loss,
see :func:`loss_fn`; 10% empty captions for classifier-free guidance, an exponential moving average of the
weights) on :mod:`chromaviz.models.shapes.dataset`, and writes the moving-average pipeline with ``save_pretrained``.

The bundled model was trained in three stages on a 2-core CPU (docs/shapes_model.md says why):

    python -m chromaviz.models.shapes.train --out runs/shapes-eps --prediction-type epsilon --steps 4000 --stop-at 2250 --threads 1
    python -m chromaviz.models.shapes.train --out runs/shapes --init-from runs/shapes-eps --steps 2600 --lr 1e-3 --threads 1
    python -m chromaviz.models.shapes.train --out runs/shapes-tok --init-from runs/shapes/pipeline --steps 2600 --lr 4e-4 \
        --ema-decay 0.999 --seed 3 --threads 2
    python -m chromaviz.models.shapes.train --out runs/shapes-tok --export-checkpoint chromaviz/models/weights/shapes32

- **Seeded**: the batch, timesteps and noise of step k are drawn from generators seeded with
  (``seed``, k), and the weights start from ``seed``; two runs with the same arguments on the same
  machine give the same model.
- **Resumable**: every ``--checkpoint-every`` steps the weights, the moving average and the
  optimiser state are written to ``OUT/checkpoint.safetensors`` (+ ``checkpoint.json``);
  ``--resume`` continues from there, with the same data a run without a break would have seen.
- **Reported**: ``OUT/training.json`` states the steps, the seconds, the machine and the loss curve.

``--export FOLDER`` writes the final pipeline there (the package's copy lives in
``chromaviz/models/weights/shapes32``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from . import dataset as shapes
from ..diffusers.text_pixels import TextToPixelsPipeline
from .tokenizer import clip_tokenizer

SIZE = 32
UNET = dict(
    sample_size=SIZE, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64, 128),
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    cross_attention_dim=64, attention_head_dim=4, norm_num_groups=32,
    class_embed_type="projection", projection_class_embeddings_input_dim=64, resnet_time_scale_shift="scale_shift",
)
"""The UNet's configuration: three levels (32², 16², 8²). The caption reaches it twice: through
cross-attention over the token embeddings at 8², and as the pooled text embedding added to the time
embedding, which scales and shifts every ResNet block (cheap global conditioning, which is what a
caption of colours, a shape and a texture mostly is)."""

TEXT = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2, projection_dim=64,
            hidden_act="gelu")
"""The text encoder's configuration (vocabulary and positions come from the tokenizer)."""

SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                 clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
"""DDIM with the cosine schedule of improved DDPM (Nichol & Dhariwal, 2021), made for 32² images.

The network predicts v = α·ε − σ·x0. Its β is capped at 0.999, so ᾱ(999) ≈ 2·10⁻⁹ and sampling
from t = 999 ("trailing" spacing) starts from noise with nothing inherited: with v, x̂0 = α·x_t − σ·v̂
is well conditioned there, where ε-prediction's x̂0 = (x_t − σ·ε̂)/α would multiply the network's
error by 1/α ≈ 2·10⁴. An ε loss also hardly trains the levels decided at such low SNR (the colours):
its error in x0 is weighted by SNR."""

CAPTION_DROP = 0.1
MIN_SNR_GAMMA = 5.0


def build_pipeline(seed: int, workdir: Path, prediction_type: str = "v_prediction") -> TextToPixelsPipeline:
    """A freshly initialised pipeline (weights from ``seed``); the tokenizer files go to ``workdir``."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = clip_tokenizer(workdir / "tokenizer-files", shapes.VOCABULARY, max_length=10)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), max_position_embeddings=tok.model_max_length,
                                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id, **TEXT))
    return TextToPixelsPipeline(unet=UNet2DConditionModel(**UNET), text_encoder=text, tokenizer=tok,
                                scheduler=DDIMScheduler(**{**SCHEDULER, "prediction_type": prediction_type}))


def _generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 7 + stream) % (1 << 63))


def training_batch(pipe: TextToPixelsPipeline, seed: int, step: int, batch_size: int):
    """(images (B, 3, 32, 32) in [−1, 1], captions, timesteps (B,), noise) of step ``step``."""
    data = _generator(seed, step, 0)
    scenes = shapes.random_scenes(batch_size, data)
    images = shapes.render(scenes, SIZE, data) * 2 - 1
    drop = torch.rand(batch_size, generator=data) < CAPTION_DROP
    captions = ["" if d else s.caption for s, d in zip(scenes, drop.tolist())]
    noise_gen = _generator(seed, step, 1)
    t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (batch_size,), generator=noise_gen)
    noise = torch.randn(images.shape, generator=noise_gen)
    return images, captions, t, noise


def loss_fn(pipe: TextToPixelsPipeline, images, captions, t, noise) -> torch.Tensor:
    """Squared error of the prediction, weighted per sample so that it counts as w·|x̂0 − x0|².

    The squared errors relate as |ε̂ − ε|² = SNR·|x̂0 − x0|² and |v̂ − v|² = (1 + SNR)·|x̂0 − x0|².
    ε uses min-SNR-γ (Hang et al., 2023): w = min(SNR, γ), which all but ignores the lowest SNRs.
    v uses w = min(1 + SNR, γ): full weight at low SNR, where the caption alone decides the
    coarsest levels (the colours), and capped at γ where fine detail would dominate.
    """
    abar = pipe.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    x_t = alpha * images + sigma * noise
    embeds, pooled = pipe.embed_text(captions, images.device)
    pred = pipe.unet(x_t, t, encoder_hidden_states=embeds, class_labels=pooled, return_dict=False)[0]
    snr = (abar / (1 - abar)).flatten()
    if pipe.scheduler.config.prediction_type == "v_prediction":
        target, weight = alpha * noise - sigma * images, torch.clamp(snr + 1, max=MIN_SNR_GAMMA) / (snr + 1)
    else:
        target, weight = noise, torch.clamp(snr, max=MIN_SNR_GAMMA) / snr
    return (weight * (pred - target).pow(2).mean(dim=(1, 2, 3))).mean()


def _trainable(pipe: TextToPixelsPipeline) -> dict[str, torch.nn.Parameter]:
    named = {f"unet.{k}": p for k, p in pipe.unet.named_parameters()}
    named.update({f"text_encoder.{k}": p for k, p in pipe.text_encoder.named_parameters()})
    return named


def save_checkpoint(out: Path, params: dict, ema: dict, opt: torch.optim.Optimizer, state: dict) -> None:
    """Weights, moving average and AdamW moments as safetensors; step and history as JSON."""
    tensors = {f"param.{k}": p.detach().contiguous() for k, p in params.items()}
    tensors.update({f"ema.{k}": v.contiguous() for k, v in ema.items()})
    index = {id(p): k for k, p in params.items()}
    for group in opt.param_groups:
        for p in group["params"]:
            for name, value in opt.state.get(p, {}).items():
                tensors[f"adam.{name}.{index[id(p)]}"] = value.detach().reshape(value.shape).contiguous()
    tmp = out / "checkpoint.safetensors.tmp"
    save_file(tensors, tmp)
    os.replace(tmp, out / "checkpoint.safetensors")
    (out / "checkpoint.json").write_text(json.dumps(state))


def load_checkpoint(out: Path, params: dict, ema: dict, opt: torch.optim.Optimizer) -> dict:
    """Restore what :func:`save_checkpoint` wrote; returns its JSON state."""
    tensors = load_file(out / "checkpoint.safetensors")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(tensors[f"param.{k}"])
            ema[k].copy_(tensors[f"ema.{k}"])
    for k, p in params.items():
        moments = {name: tensors[f"adam.{name}.{k}"] for name in ("step", "exp_avg", "exp_avg_sq") if f"adam.{name}.{k}" in tensors}
        if moments:
            opt.state[p] = moments
    return json.loads((out / "checkpoint.json").read_text())


def learning_rate(step: int, steps: int, peak: float, warmup: int = 200) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% of ``peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def machine() -> str:
    """What the run trains on, in words."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA)"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def export(pipe: TextToPixelsPipeline, ema: dict, folder: Path) -> None:
    """Write ``pipe`` with the moving-average weights to ``folder`` (``save_pretrained``, safetensors)."""
    params = _trainable(pipe)
    backup = {k: p.detach().clone() for k, p in params.items()}
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(ema[k])
        pipe.save_pretrained(folder, safe_serialization=True)
        for k, p in params.items():
            p.copy_(backup[k])


def _write_summary(folder: Path, report: dict) -> None:
    """How the weights were trained travels with them: the report without its loss curve."""
    (folder / "training.json").write_text(json.dumps({k: v for k, v in report.items() if k != "losses"}, indent=1))


def _checkpoint_ema(out: Path, params: dict) -> dict[str, torch.Tensor]:
    if not (out / "checkpoint.safetensors").is_file():
        raise FileNotFoundError(f"no checkpoint in {out}; train first (python -m chromaviz.models.shapes.train --out {out})")
    tensors = load_file(out / "checkpoint.safetensors")
    return {k: tensors[f"ema.{k}"] for k in params}


def _starting_weights(source: Path, params: dict) -> dict[str, torch.Tensor]:
    """The weights a run starts from: a run folder's checkpoint (its moving average) or a saved pipeline."""
    files = {part: source / part / name for part, name in (("unet", "diffusion_pytorch_model.safetensors"),
                                                            ("text_encoder", "model.safetensors"))}
    if (source / "checkpoint.safetensors").is_file() or not all(f.is_file() for f in files.values()):
        return _checkpoint_ema(source, params)
    tensors = {f"{part}.{k}": v for part, f in files.items() for k, v in load_file(f).items()}
    missing = sorted(set(params) - set(tensors))
    if missing:
        raise ValueError(f"the pipeline in {source} does not fit this network: {len(missing)} weights missing "
                         f"(first: {missing[0]}); it must have been trained with the same configuration")
    return {k: tensors[k] for k in params}


def export_checkpoint(out: Path, folder: Path, seed: int = 0) -> int:
    """Write the moving average of the last checkpoint in ``out`` as a pipeline to ``folder``; its step."""
    state = json.loads((out / "checkpoint.json").read_text()) if (out / "checkpoint.json").is_file() else {}
    pipe = build_pipeline(seed, out, state.get("config", {}).get("prediction_type", "epsilon"))
    export(pipe, _checkpoint_ema(out, _trainable(pipe)), folder)
    if (out / "training.json").is_file():
        _write_summary(Path(folder), json.loads((out / "training.json").read_text()))
    return json.loads((out / "checkpoint.json").read_text())["step"]


def train(out: Path, steps: int, batch_size: int = 32, lr: float = 2e-3, seed: int = 0, ema_decay: float = 0.995,
          checkpoint_every: int = 250, resume: bool = False, device: str | None = None,
          export_to: Path | None = None, prediction_type: str = "v_prediction", init_from: Path | None = None,
          stop_at: int | None = None) -> dict:
    """Train for ``steps`` steps (see the module docstring); returns the report written to training.json.

    ``init_from`` starts the networks from the moving average of another run's checkpoint (a run
    folder) or from a pipeline saved by :func:`export` (the bundled weights, to fine-tune them).
    ``stop_at`` ends this session at that step, keeping the learning-rate schedule of ``steps`` so
    that ``resume`` can go on later.
    """
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe = build_pipeline(seed, out, prediction_type)
    params = _trainable(pipe)
    if init_from is not None:
        with torch.no_grad():
            for k, v in _starting_weights(Path(init_from), params).items():
                params[k].copy_(v)
    pipe.to(device)
    pipe.unet.train()
    pipe.text_encoder.train()
    ema = {k: p.detach().clone() for k, p in params.items()}
    opt = torch.optim.AdamW(params.values(), lr=lr, weight_decay=0.01)
    config = {"prediction_type": prediction_type, "init_from": None if init_from is None else Path(init_from).name}
    state = {"step": 0, "seconds": 0.0, "losses": [], "sessions": [], "config": config}
    if resume and (out / "checkpoint.json").is_file():
        state = load_checkpoint(out, params, ema, opt)
    until = min(steps, stop_at or steps)
    start, started = state["step"], time.perf_counter()
    window: list[float] = []
    bar = tqdm(range(start, until), initial=start, total=steps, desc="training", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, lr)
        images, captions, t, noise = training_batch(pipe, seed, step, batch_size)
        loss = loss_fn(pipe, images.to(device), captions, t.to(device), noise.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, p in params.items():
                ema[k].lerp_(p.detach(), 1 - decay)
        window.append(loss.item())
        checkpoint = (step + 1) % checkpoint_every == 0 or step + 1 == until
        if len(window) == 50 or checkpoint:
            state["losses"].append([step + 1, sum(window) / len(window)])
            bar.set_postfix(loss=f"{state['losses'][-1][1]:.4f}")
            window = []
        if checkpoint:
            state["step"] = step + 1
            elapsed = state["seconds"] + time.perf_counter() - started
            save_checkpoint(out, params, ema, opt, {**state, "seconds": elapsed})
    state["seconds"] += time.perf_counter() - started
    state["step"] = until
    state["sessions"].append({"machine": machine(), "until_step": until})
    report = {"steps": until, "of_steps": steps, "batch_size": batch_size, "seed": seed, "lr": lr, "ema_decay": ema_decay,
              **state["config"],
              "seconds": round(state["seconds"], 1), "machine": machine(), "torch": torch.__version__,
              "parameters": {"unet": sum(p.numel() for p in pipe.unet.parameters()),
                             "text_encoder": sum(p.numel() for p in pipe.text_encoder.parameters())},
              "losses": state["losses"], "sessions": state["sessions"]}
    (out / "training.json").write_text(json.dumps(report, indent=1))
    ema_cpu = {k: v.cpu() for k, v in ema.items()}
    export(pipe.to("cpu"), ema_cpu, out / "pipeline")
    if export_to is not None:
        export(pipe, ema_cpu, export_to)
        _write_summary(Path(export_to), report)
    print(f"trained {until} steps in {report['seconds'] / 60:.1f} min on {report['machine']}; "
          f"final loss {state['losses'][-1][1]:.4f}; pipeline in {out / 'pipeline'}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chromaviz.models.shapes.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/shapes"), help="folder for checkpoints and the result")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of AdamW")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ema-decay", type=float, default=0.995)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is faster on a CPU shared with other work)")
    parser.add_argument("--prediction-type", choices=("v_prediction", "epsilon"), default="v_prediction")
    parser.add_argument("--init-from", type=Path, default=None, metavar="RUN",
                        help="start from the moving average of another run's checkpoint (a run folder) or from a saved pipeline "
                             "(e.g. the bundled weights)")
    parser.add_argument("--stop-at", type=int, default=None, help="end this session at that step (resume later)")
    parser.add_argument("--export", type=Path, default=None, help="also write the pipeline to this folder")
    parser.add_argument("--export-checkpoint", type=Path, default=None, metavar="FOLDER",
                        help="do not train: write the last checkpoint's moving average in OUT to FOLDER")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be positive")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be positive")
        torch.set_num_threads(args.threads)
    if args.export_checkpoint is not None:
        step = export_checkpoint(args.out, args.export_checkpoint, args.seed)
        print(f"wrote the moving average at step {step} to {args.export_checkpoint}")
        return
    train(args.out, args.steps, args.batch_size, args.lr, args.seed, args.ema_decay, args.checkpoint_every,
          args.resume, args.device, args.export, args.prediction_type, args.init_from, args.stop_at)


if __name__ == "__main__":
    main()
