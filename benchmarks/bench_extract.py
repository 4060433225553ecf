"""Throughput of patch extraction: tiles (or CT cubes) per second, by stage and encoder.

Writes a synthetic pyramidal TIFF slide and a synthetic CT volume (radiopath.synthetic_images),
then times

* WSI: tissue mask + tiling; tile reading through the DataLoader (workers 0 and N); the
  whole ``extract_slide`` with the hand-crafted encoder; the ResNet-18 (2-D, random
  weights) encoder alone on the read tiles;
* CT: the MONAI chain + cube gathering; ``extract_ct`` with the hand-crafted encoder; the
  ResNet-18 (3-D, MedicalNet-style, random weights) encoder alone on the cubes.

    python benchmarks/bench_extract.py --threads 2 --device cpu
    python benchmarks/bench_extract.py --device cuda     # on a GPU machine
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import DataLoader

from radiopath.extract.ct import extract_ct, gather_patches, load_ct, patch_grid, patch_region
from radiopath.extract.encoders import get_encoder
from radiopath.extract.wsi import TileDataset, extract_slide, open_slide, tile_grid, tissue_mask
from radiopath.synthetic_images import synthetic_ct, synthetic_slide, write_pyramidal_tiff


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def encode_all(encoder, batches):
    return [encoder.encode(b) for b in batches]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers for the N-worker run"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--slide-size", type=int, default=4096, help="level-0 side (px at 0.5 um)")
    ap.add_argument("--patch-size", type=int, default=224)
    ap.add_argument("--ct-shape", type=int, nargs=3, default=(160, 160, 96))
    ap.add_argument("--ct-patch", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    rows: list[tuple[str, str, int, float]] = []
    dev = args.device

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        rgb, _, _ = synthetic_slide(rng, args.slide_size, 0.3, grid=16)
        slide_path = write_pyramidal_tiff(tmp / "slide.tiff", rgb, mpp=0.5)
        del rgb

        # --- WSI stages
        def tiling():
            slide = open_slide(slide_path)
            mask = tissue_mask(slide, mpp=0.5)
            return tile_grid(slide.dimensions, mask, args.patch_size, min_tissue=0.5)

        t, coords = timed(tiling, repeat=2)
        n = len(coords)
        rows.append(("wsi tissue mask + tiling", "-", n, t))
        ds = TileDataset(slide_path, coords, args.patch_size, args.patch_size)
        for workers in (0, args.workers):
            loader = DataLoader(ds, batch_size=args.batch_size, num_workers=workers)
            t, batches = timed(lambda loader=loader: list(loader))
            rows.append((f"wsi tile reading, {workers} workers", "-", n, t))
        hand = get_encoder("handcrafted", "wsi", device=dev)
        t, _ = timed(lambda: encode_all(hand, batches), repeat=2)
        rows.append(("wsi handcrafted encoder only", dev, n, t))
        resnet = get_encoder("resnet18", "wsi", random_init=True, device=dev)
        encode_all(resnet, batches[:1])  # warm-up
        t, _ = timed(lambda: encode_all(resnet, batches))
        rows.append(("wsi resnet18 (2-D) encoder only", dev, n, t))
        for workers in (0, args.workers):
            t, bag = timed(
                lambda workers=workers: extract_slide(
                    slide_path,
                    hand,
                    mpp=0.5,
                    patch_size=args.patch_size,
                    batch_size=args.batch_size,
                    workers=workers,
                )
            )
            rows.append(
                (f"wsi extract_slide + handcrafted, {workers} workers", dev, bag.num_patches, t)
            )
        t, bag = timed(
            lambda: extract_slide(
                slide_path,
                resnet,
                mpp=0.5,
                patch_size=args.patch_size,
                batch_size=args.batch_size,
                workers=args.workers,
            )
        )
        rows.append(
            (f"wsi extract_slide + resnet18, {args.workers} workers", dev, bag.num_patches, t)
        )

        # --- CT stages
        hu, tumour, _ = synthetic_ct(rng, tuple(args.ct_shape), 0.3)
        ct_path = tmp / "ct.nii.gz"
        nib.save(nib.Nifti1Image(hu, np.diag([1.0, 1.0, 1.0, 1.0])), ct_path)

        def ct_prep():
            vol = load_ct(ct_path, spacing=(1.0, 1.0, 1.0))
            cc = patch_grid(patch_region(vol), args.ct_patch)
            return vol, cc, gather_patches(vol.image, cc, args.ct_patch, -1024.0)

        t, (vol, cc, cubes) = timed(ct_prep, repeat=2)
        m = len(cc)
        rows.append(("ct MONAI chain + body region + cubes", "-", m, t))
        cbatches = list(torch.split(cubes, args.batch_size))
        chand = get_encoder("handcrafted", "ct", device=dev)
        t, _ = timed(lambda: encode_all(chand, cbatches), repeat=2)
        rows.append(("ct handcrafted encoder only", dev, m, t))
        cres = get_encoder("resnet18", "ct", random_init=True, device=dev)
        encode_all(cres, cbatches[:1])
        t, _ = timed(lambda: encode_all(cres, cbatches))
        rows.append(("ct resnet18 (3-D) encoder only", dev, m, t))
        t, cbag = timed(
            lambda: extract_ct(
                ct_path,
                chand,
                spacing=(1, 1, 1),
                patch_size=args.ct_patch,
                batch_size=args.batch_size,
            )
        )
        rows.append(("ct extract_ct + handcrafted", dev, cbag.num_patches, t))

    cores = torch.get_num_threads()
    print(
        f"\ntorch {torch.__version__}, {cores} threads, device {dev}; WSI tiles "
        f"{args.patch_size} px at 0.5 um/px from a {args.slide_size}^2 slide; CT cubes "
        f"{args.ct_patch}^3 voxels at 1 mm\n"
    )
    print(f"| {'stage':<46} | {'device':<6} | {'patches':>7} | {'seconds':>8} | {'patches/s':>9} |")
    print(f"|{'-' * 48}|{'-' * 8}|{'-' * 9}|{'-' * 10}|{'-' * 11}|")
    for name, device, count, secs in rows:
        print(f"| {name:<46} | {device:<6} | {count:>7} | {secs:>8.2f} | {count / secs:>9.1f} |")


if __name__ == "__main__":
    main()
