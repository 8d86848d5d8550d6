"""``PromptDataModule``: the prompts of ``msdm predict`` — one item per image to generate, with its seed.

Item ``k`` (prompt-major: all images of prompt 1 first) is ``{"prompt", "prompt_index", "image_index", "seed",
"index"}`` with ``seed = image_seed + k``, the rule of ``msdm generate`` (msdm/generation.py). Under DDP Lightning
shards the predict loader without padding (``UnrepeatedDistributedSampler``): rank ``r`` gets items
``r, r + W, r + 2W, ...`` — image ``k`` on rank ``k mod W``, as ``msdm generate`` shards — and every image keeps its
seed, so the files do not depend on the number of ranks. ``ChallengeImageWriter`` (added by ``msdm predict``)
writes them in the challenge layout under ``out``.

    msdm predict -c configs/quickstart_unet.yaml --ckpt_path last \\
        --data PromptDataModule --data.prompts prompts.txt --data.num_images_per_prompt 10 --data.out generated/
"""

from __future__ import annotations

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from msdm.generators import expand_prompts
from msdm.prompts import read_prompts


class PromptItems(Dataset):
    def __init__(self, prompts: list[str], num_images_per_prompt: int, image_seed: int):
        self.items = expand_prompts(prompts, num_images_per_prompt)
        self.image_seed = int(image_seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict:
        p, i, text = self.items[k]
        return {"prompt": text, "prompt_index": p, "image_index": i, "seed": self.image_seed + k, "index": k}


def _collate(items: list[dict]) -> dict:
    return {key: [it[key] for it in items] for key in items[0]}


class PromptDataModule(pl.LightningDataModule):
    """Prompts to generate images for (``predict`` only).

    Args:
        prompts: a prompt file (``.txt`` one per line, ``.json`` list or challenge pairs, ``.csv``; as ``msdm
            generate --prompts``) or a list of prompts.
        num_images_per_prompt: images per prompt (the challenge: 10).
        image_seed: image ``k`` (0-based, prompt-major) is drawn with seed ``image_seed + k``. (Not ``seed``: a
            config's data seed would carry over when ``--data`` switches the class.)
        out: folder ``msdm predict`` writes into (``prompt0001_img0001.png``, ``prompts.json``, ``provenance.json``).
        batch_size: images per ``predict_step``.
    """

    def __init__(self, prompts: str | list[str], num_images_per_prompt: int = 10, image_seed: int = 0,
                 out: str = "generated", batch_size: int = 8):
        super().__init__()
        self.save_hyperparameters()
        self.prompts = list(prompts) if isinstance(prompts, (list, tuple)) else read_prompts(prompts)
        if not self.prompts:
            raise ValueError(f"PromptDataModule: no prompts in {prompts!r}")
        self.num_images_per_prompt = int(num_images_per_prompt)
        self.image_seed = int(image_seed)
        self.out = str(out)
        self.batch_size = int(batch_size)

    def predict_dataloader(self) -> DataLoader:
        ds = PromptItems(self.prompts, self.num_images_per_prompt, self.image_seed)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, collate_fn=_collate)
