"""Memory of holding Split CIFAR-100's training images as uint8 (clarena-experiments data).

Writes synthetic CIFAR-100 files of the real shape (50,000 train images of 3x32x32 in
``cifar-100-python/train``; a 100-image test split so the figure is about the training images),
then, in a fresh process, measures resident memory (Linux ``/proc/self/status``), from a
baseline taken after a warm-up epoch over a tiny dataset (so one-time loader allocations are
not counted as data):

- held: RSS after the data module has loaded the source (train + validation images), minus the
  RSS before;
- peak while held: the high-water mark while a whole epoch of task 1's training loader (random
  crop and flip) and its test loader run, minus the RSS before loading (the high-water mark is
  reset after loading via ``/proc/self/clear_refs``);
- loading peak: the high-water mark during loading (the pickle file is read whole, once).

The uint8 size is 50,000 x 3,072 bytes = 153.6 MB (float32 would be 614 MB). Checks that the
peak while held is at most 1.1x the uint8 size and prints the ratios.

Run: ``python benchmarks/dataset_memory.py`` (about 30 s).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

TRAIN_COUNT = 50_000
UINT8_BYTES = TRAIN_COUNT * 3 * 32 * 32
BOUND = 1.1


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def measure(root: str) -> None:
    """Child process: load Split CIFAR-100 from ``root`` and print three byte counts."""
    import ctypes
    import gc

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from clarena.experiments.running.data import BatchTransform, CLDataModule

    torch.set_num_threads(1)
    mean, std = [0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]
    # Warm-up: the loader and transform code paths' one-time allocations belong to the baseline.
    warmup = TensorDataset(torch.zeros(256, 3, 32, 32, dtype=torch.uint8), torch.zeros(256))
    transform = BatchTransform(mean=mean, std=std, crop_padding=4, horizontal_flip=True)
    for _ in DataLoader(warmup, batch_size=64, shuffle=True, collate_fn=transform):
        pass
    module = CLDataModule(
        sequence="split",
        source="cifar100",
        root=root,
        num_tasks=10,
        mean=mean,
        std=std,
        crop_padding=4,
        horizontal_flip=True,
        batch_size=64,
    )
    gc.collect()
    # Return the warm-up's freed heap too, as loading does, so both sides count alike.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status_kib("VmRSS")
    _reset_peak()
    module.setup_task_id(1)
    gc.collect()
    loading_peak = _status_kib("VmHWM") - before
    held = _status_kib("VmRSS") - before
    _reset_peak()
    for _ in module.train_dataloader():
        pass
    for _ in module.test_dataloader():
        pass
    peak = _status_kib("VmHWM") - before
    print(held * 1024, peak * 1024, loading_peak * 1024)


def main() -> None:
    from clarena.experiments.running.data.synthetic_files import write_synthetic_files

    with tempfile.TemporaryDirectory() as root:
        write_synthetic_files("cifar100", root, train_count=TRAIN_COUNT, test_count=100)
        output = subprocess.run(
            [sys.executable, __file__, "--measure", root],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    held, peak, loading_peak = (int(value) for value in output.split()[-3:])
    print(f"Split CIFAR-100 train images, uint8 size: {UINT8_BYTES / 1e6:.1f} MB")
    print(f"held after loading:     {held / 1e6:7.1f} MB ({held / UINT8_BYTES:.2f}x)")
    print(f"peak while held + epoch:{peak / 1e6:7.1f} MB ({peak / UINT8_BYTES:.2f}x)")
    print(
        f"peak while loading:     {loading_peak / 1e6:7.1f} MB ({loading_peak / UINT8_BYTES:.2f}x)"
    )
    if peak > BOUND * UINT8_BYTES:
        raise SystemExit(f"peak while held {peak / UINT8_BYTES:.2f}x exceeds {BOUND}x")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        measure(sys.argv[2])
    else:
        main()
