"""MSDM stage 2 on a :class:`~msdm.cache.training.TrainingCache`: build it from the settings, fill it, read it.

The trainable model (``MSDMUNetModule``, or a notebook loop) hands over two encoders as plain functions —
``encode_posterior(pixels) -> {"mean", "std"}`` (the frozen VAE) and ``encode_text(captions) -> {"states", "mask"}``
(the frozen text encoder) — and reads, per batch, VAE posteriors keyed by sample id and text states keyed by caption
(docs/scaling.md, "Cached latents"). Nothing here loads a model: fingerprints come from files
(:mod:`msdm.cache.fingerprints`), and the encoders run only for misses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from msdm.cache.training import TrainingCache

Encoder = Callable[[torch.Tensor], dict]
TextEncoder = Callable[[list[str]], dict]


def datamodule_resolution(datamodule) -> int | None:
    """The training pixels' size: the DataModule's ``resolution`` (hparam or attribute)."""
    if datamodule is None:
        return None
    hp = getattr(datamodule, "hparams", {}) or {}
    return hp.get("resolution", getattr(datamodule, "resolution", None))


def build_training_cache(settings: Mapping, datamodule=None, rank: int = 0, vae=None) -> TrainingCache:
    """The cache of these stage-2 ``settings`` (``MSDMUNetModule``'s hparams: ``vae``, ``text_encoder``,
    ``max_length``, ``frozen_dtype``, ``cache_*``, ...) and ``datamodule``'s transform.

    ``vae``: the live VAE, used for its fingerprint only when ``settings["vae"]`` is ``None`` (random weights).
    """
    from msdm.cache.fingerprints import text_encoder_fingerprint, transform_fingerprint, vae_fingerprint
    from msdm.lora.embedding_cache import fingerprint
    from msdm.models.frozen import parse_dtype

    s = settings
    vae_fp = vae_fingerprint(s["vae"], None if s["vae"] is not None else vae)
    latent_parts = {"what": "msdm-vae-posterior", "version": 1, "vae": vae_fp, "frozen_dtype": s["frozen_dtype"],
                    # the training pixels' size: the DataModule's (image_size only sizes generated images)
                    "resolution": datamodule_resolution(datamodule), "transform": transform_fingerprint(datamodule),
                    "tag": s["cache_tag"]}
    chunking = s.get("text_chunking", "none")
    text_parts = {"what": "msdm-text-states", "version": 1, "max_length": s["max_length"],
                  **({"chunking": chunking} if chunking != "none" else {}),
                  "encoder": text_encoder_fingerprint(s["text_encoder"], s["local_files_only"]),
                  "frozen_dtype": s["frozen_dtype"]}
    directory = None if s["cache_dir"] == "memory" else s["cache_dir"]
    return TrainingCache(
        directory, fingerprint(**latent_parts), fingerprint(**text_parts), rank=rank,
        variants=s["cache_variants"], text_epochs=s["cache_text_epochs"], store_dtype=parse_dtype(s["cache_dtype"]),
        memory_bytes=int(s["cache_memory_gb"] * 2**30), describe_latents=latent_parts, describe_text=text_parts,
    )


def read_posterior(cache: TrainingCache, batch: dict, split: str, epoch: int, encode_posterior: Encoder | None,
                   device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` of a batch's VAE posteriors; misses are encoded (``encode_posterior``) or raise (``None``)."""
    ids = [str(i) for i in batch["id"]]
    compute = None
    if encode_posterior is not None:

        def compute(rows):
            if "pixel_values" not in batch:
                raise KeyError(f"latents of {[ids[j] for j in rows[:5]]} are not cached and the batch has no pixels")
            return encode_posterior(batch["pixel_values"][rows])

    return cache.latent_posterior(ids, split, epoch, compute, device=device)


def read_text(cache: TrainingCache, captions: list[str], encode_text: TextEncoder | None, device=None):
    """``(states, mask)`` of ``captions``; misses are encoded (``encode_text``) or raise (``None``)."""
    captions = list(captions)
    compute = None if encode_text is None else (lambda rows: encode_text([captions[j] for j in rows]))
    return cache.text_states(captions, compute, device=device)


@torch.no_grad()
def fill_training_cache(cache: TrainingCache, loaders: dict, encode_posterior: Encoder, encode_text: TextEncoder,
                        always_captions=(), rank: int = 0, world_size: int = 1, shard_by_id: bool = False,
                        scheme: str = "single", max_batches: int | None = None, restore_epoch: int = 0) -> dict:
    """Fill ``cache`` from ``{split: DataLoader}`` (``train`` gets ``variants`` / ``text_epochs`` passes, others one).

    ``always_captions`` (the empty caption of CFG dropout, sample-grid prompts) are encoded on every rank.
    ``shard_by_id``: every rank reads the whole loader and encodes the ids whose hash falls on it (``msdm cache``
    under torchrun/srun, no process group needed); otherwise each rank encodes every batch it reads (a loader
    Lightning already sharded). A split read to the end is marked filled for ``(rank, world_size)``.
    Returns ``{split: {"batches", "latents", "text"[, "complete" | "skipped"]}, "extra_text": n}``.
    """

    with cache.fill_lock():  # one filler per rank and folder
        return _fill(cache, loaders, encode_posterior, encode_text, always_captions, rank, world_size, shard_by_id,
                     scheme, max_batches, restore_epoch)


def _fill(cache, loaders, encode_posterior, encode_text, always_captions, rank, world_size, shard_by_id, scheme,
          max_batches, restore_epoch) -> dict:
    from msdm.cache.fill import id_shard, iterate_variants, sized_len

    always = list(dict.fromkeys([str(c) for c in always_captions]))
    t0 = cache.text.misses
    if always:
        cache.text_states(always, lambda r: encode_text([always[j] for j in r]), device="cpu")
    stats: dict = {"extra_text": cache.text.misses - t0}
    for split, loader in loaders.items():
        n = sized_len(getattr(loader, "dataset", None))
        n = -1 if n is None else n
        text_epochs = cache.text_epochs if split == "train" else 1
        if cache.is_filled(split, n, text_epochs):
            stats[split] = {"batches": 0, "latents": 0, "text": 0, "skipped": True}
            continue
        lat0, txt0, batches, total = cache.latents.misses, cache.text.misses, 0, sized_len(loader)
        listed = getattr(getattr(loader, "dataset", None), "all_captions", None)
        if split == "train" and callable(listed):  # the dataset can list every caption it may emit
            caps = list(dict.fromkeys(str(c) for c in listed()))
            cache.text_states(caps, lambda r, c=caps: encode_text([c[j] for j in r]), device="cpu")
        variants = cache.variants if split == "train" else 1
        passes = max(variants, text_epochs)
        used_latents: set[tuple[str, str]] = set()  # the entries this split needs, for the marker's shard list
        used_text: set[str] = set(always)
        if split == "train" and callable(listed):
            used_text.update(caps)
        for k, _, batch in iterate_variants(loader, passes, restore_epoch=restore_epoch, max_batches=max_batches):
            batches += 1
            ids = [str(i) for i in batch["id"]]
            rows = [j for j, i in enumerate(ids) if not shard_by_id or id_shard(i, world_size) == rank]
            if not rows:
                continue
            sub_ids = [ids[j] for j in rows]
            if k < variants and cache.missing_latents(sub_ids, split, k):  # passes >= variants: captions only
                px = batch["pixel_values"][rows]
                cache.latent_posterior(sub_ids, split, k, lambda r, px=px: encode_posterior(px[r]))
            if k < variants:
                used_latents.update((i, cache.variant_key(split, k)) for i in sub_ids)
            captions = [str(batch["caption"][j]) for j in rows]
            used_text.update(captions)
            if cache.missing_text(captions):
                cache.text_states(captions, lambda r, c=captions: encode_text([c[j] for j in r]))
        complete = max_batches is None or total is None or batches >= passes * total
        cache.flush()  # the shards first, the marker that vouches for them last
        if complete:
            cache.mark_filled(split, n, scheme, rank, world_size, text_epochs=text_epochs,
                              latent_shards=[s for s in (cache.latents.shard_of(i, t) for i, t in used_latents) if s],
                              text_shards=[s for s in (cache.text.shard_of("", c) for c in used_text) if s])
        stats[split] = {"batches": batches, "latents": cache.latents.misses - lat0,
                        "text": cache.text.misses - txt0, "complete": complete}
    cache.flush()
    return stats
