"""``dynaguide convert``: PyTorch weights (DinoV2, the original's dynamics checkpoints) -> orbax params."""
from __future__ import annotations

import os

from dynaguide_jax.outputs import prepare_output_dir


def add_parser(sub) -> None:
    conv = sub.add_parser("convert", help="convert PyTorch weights to orbax params")
    csub = conv.add_subparsers(dest="what", required=True, metavar="{dinov2,dynamics}")
    d = csub.add_parser("dinov2", help="HF snapshot dir or torch-hub .pth -> orbax",
                        description="Convert DinoV2 weights once; load the result with load_dinov2(OUT).")
    d.add_argument("src", help="HF snapshot directory (config.json + weights) or torch-hub .pth file")
    d.add_argument("out", help="output directory")
    d.add_argument("--num-heads", type=int, default=None, help="hub files only (default: width / 64)")
    d.set_defaults(func=run_dinov2)
    y = csub.add_parser("dynamics", help="original FinalStatePredictionDino .pth -> orbax",
                        description="Convert a dynamics checkpoint of the original code; writes OUT/dynamics "
                        "and, when the file holds the frozen encoder, OUT/encoder.")
    y.add_argument("src")
    y.add_argument("out")
    y.add_argument("--num-heads", type=int, default=8)
    y.add_argument("--patches-per-camera", type=int, default=256)
    y.add_argument("--encoder-num-heads", type=int, default=None,
                   help="heads of the frozen encoder (default: its width / 64, as every released DinoV2)")
    y.set_defaults(func=run_dynamics)


def run_dinov2(args) -> int:
    from dynaguide_jax.encoders import load_dinov2, save_dinov2

    cfg, params = load_dinov2(args.src, num_heads=args.num_heads)
    prepare_output_dir(args.out, "OUT")
    save_dinov2(args.out, cfg, params)
    print(f"converted {args.src} -> {args.out}\n{cfg.to_json()}")
    return 0


def run_dynamics(args) -> int:
    from dynaguide_jax.dynamics import load_original_dynamics, save_dynamics
    from dynaguide_jax.encoders import save_dinov2

    cfg, params, encoder = load_original_dynamics(args.src, num_heads=args.num_heads,
                                                  patches_per_camera=args.patches_per_camera,
                                                  encoder_num_heads=args.encoder_num_heads)
    prepare_output_dir(args.out, "OUT")
    save_dynamics(os.path.join(args.out, "dynamics"), cfg, params)
    print(f"dynamics -> {os.path.join(args.out, 'dynamics')}\n{cfg.to_json()}")
    if encoder is not None:
        save_dinov2(os.path.join(args.out, "encoder"), *encoder)
        print(f"encoder (state_encoder.*) -> {os.path.join(args.out, 'encoder')}")
    return 0
