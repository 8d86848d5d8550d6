"""FluxLoRAModule on a tiny random FLUX.1-dev-like folder and real Kvasir-SEG images (offline, CPU)."""

import warnings

import lightning as L
import pytest
import torch
from conftest import cpu_trainer
from torch.utils.data import DataLoader

from lightning_modules.flux_lora import FluxLoRAModule
from msdm.lora.testing import MEDVQA_CAPTIONS, FolderImageCaptions, write_tiny_flux

MAX_LEN = 16  # T5 tokens: short keeps the tiny model fast; the real default is 512


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory):
    return write_tiny_flux(tmp_path_factory.mktemp("flux") / "flux")


@pytest.fixture(scope="module")
def kvasir(kvasir_dir):
    return FolderImageCaptions(kvasir_dir / "images", n=4, size=32)


def make(tiny_flux, **kw):
    kw = {"rank": 4, "learning_rate": 1e-2, "frozen_dtype": "float32", "max_sequence_length": MAX_LEN,
          "height": 32, "width": 32, "num_inference_steps": 2, "text_cache_dir": "memory", "export_lora": False, **kw}
    return FluxLoRAModule(model=tiny_flux, **kw)


trainer = cpu_trainer


@pytest.fixture(scope="module")
def trained(tiny_flux, kvasir, tmp_path_factory):
    torch.manual_seed(0)
    m = make(tiny_flux, learning_rate=5e-2)
    batch = next(iter(DataLoader(kvasir, batch_size=4)))
    opt = m.configure_optimizers()
    losses = []
    for step in range(12):
        loss = m.loss(batch, torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        if step == 0:
            grads = ({n for n, p in m.named_parameters() if p.grad is not None},
                     {n for n, _ in m.named_parameters() if "lora_" in n})
        opt.step()
        losses.append(loss.item())
    d = tmp_path_factory.mktemp("flux_lora") / "lora"
    m.save_lora(str(d))
    return {"module": m, "losses": losses, "grads": grads, "dir": d}


def test_loss_falls_and_only_lora_gets_gradients(trained):
    losses = trained["losses"]
    assert losses[-1] < 0.9 * losses[0], losses
    with_grad, lora = trained["grads"]
    # Every LoRA weight and nothing else: 12 targets in the double-stream block + q/k/v in the single-stream one,
    # two matrices (A, B) each.
    assert with_grad == lora and len(lora) == 2 * (12 + 3)
    m = trained["module"]
    targets = {n.rsplit(".lora_", 1)[0] for n in lora}
    # Both block kinds are adapted: double-stream attention + feed-forward, single-stream q/k/v.
    assert any(t.startswith("transformer.transformer_blocks.0.ff_context") for t in targets)
    assert any(t.startswith("transformer.single_transformer_blocks.0.attn.to_q") for t in targets)
    assert all(not p.requires_grad for n, p in m.named_parameters() if "lora_" not in n)


def test_saved_lora_loads_into_stock_flux_pipeline(trained, tiny_flux):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny_flux, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def run():
        return pipe(MEDVQA_CAPTIONS[:2], height=32, width=32, num_inference_steps=2, max_sequence_length=MAX_LEN,
                    output_type="pt", generator=[torch.Generator().manual_seed(k) for k in range(2)]).images

    base = run()
    pipe.load_lora_weights(str(trained["dir"]))  # the one line of docs/lora.md
    with_lora = run()
    assert (with_lora - base).abs().max() > 1e-3
    # The module's generate() (embeddings passed in, same sampler, image k from seed 0 + k) matches the stock
    # pipeline with the file.
    mine = trained["module"].generate(MEDVQA_CAPTIONS[:2], seed=0)
    torch.testing.assert_close(mine, with_lora, atol=1e-4, rtol=1e-4)
    pipe.unload_lora_weights()
    torch.testing.assert_close(run(), base)


def test_conditioning_equals_the_pipelines_encode_prompt(trained, tiny_flux):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny_flux, transformer=None, vae=None, local_files_only=True)
    with torch.no_grad():
        embeds, pooled, text_ids = pipe.encode_prompt(MEDVQA_CAPTIONS, max_sequence_length=MAX_LEN)
    mine = trained["module"].encode_prompts(MEDVQA_CAPTIONS)
    torch.testing.assert_close(mine["prompt_embeds"], embeds)
    torch.testing.assert_close(mine["pooled_prompt_embeds"], pooled)
    assert embeds.shape[1] == MAX_LEN and not torch.equal(embeds[0], embeds[1])


@pytest.mark.parametrize("key", ["caption", "sample"])
def test_text_cache_returns_each_samples_embedding_under_a_shuffled_loader(trained, kvasir_dir, key):
    m = trained["module"]
    m.hparams.text_cache_key = key
    m._text_cache = None  # a fresh cache
    captions = [f"generate an image with {k} polyps" for k in ("no", "1", "2", "3")]
    ds = FolderImageCaptions(kvasir_dir / "images", n=6, size=8, captions=captions)  # ids 4, 5 share captions 0, 1
    truth = {ds[i]["id"]: m.encode_prompts([ds[i]["caption"]]) for i in range(len(ds))}
    loader = DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    orders = []
    for _epoch in range(3):
        for batch in loader:
            got = m.text_embeddings(list(batch["id"]), list(batch["caption"]))
            orders.append(list(batch["id"]))
            for j, sid in enumerate(batch["id"]):
                torch.testing.assert_close(got["prompt_embeds"][j], truth[sid]["prompt_embeds"][0])
                torch.testing.assert_close(got["pooled_prompt_embeds"][j], truth[sid]["pooled_prompt_embeds"][0])
    cache = m.text_cache()
    # Computed once per caption (shared by the images that have it) or once per sample; served from the cache after.
    computed = 4 if key == "caption" else 6
    assert cache.misses == computed and cache.hits == 18 - computed
    assert orders[0] != orders[2]  # the loader really shuffled
    m.hparams.text_cache_key = "caption"
    m._text_cache = None


def test_checkpoint_holds_only_lora_and_resumes_exactly(tiny_flux, kvasir, tmp_path):
    warnings.filterwarnings("ignore", ".*does not have many workers.*")

    def loader():
        return DataLoader(torch.utils.data.Subset(kvasir, [0, 1]), batch_size=2)

    cache = str(tmp_path / "cache")  # on disk: the resumed run reads what the first run wrote
    L.seed_everything(0)
    full = make(tiny_flux, text_cache_dir=cache, gradient_checkpointing=True, weighting_scheme="logit_normal")
    trainer(tmp_path / "full", max_epochs=2, enable_checkpointing=False).fit(full, loader())

    L.seed_everything(0)
    first = make(tiny_flux, text_cache_dir=cache, gradient_checkpointing=True, weighting_scheme="logit_normal")
    t1 = trainer(tmp_path / "a", max_epochs=1)
    t1.fit(first, loader())
    ckpt = torch.load(t1.checkpoint_callback.best_model_path, weights_only=True)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])
    assert len(ckpt["state_dict"]) == len(first.lora_parameters()) and ckpt["optimizer_states"][0]["state"]
    assert ckpt["hyper_parameters"]["rank"] == 4 and ckpt["hyper_parameters"]["model"] == tiny_flux
    reloaded = FluxLoRAModule.load_from_checkpoint(t1.checkpoint_callback.best_model_path)
    for (n, a), (_, b) in zip(first.state_dict().items(), reloaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)

    resumed = make(tiny_flux, text_cache_dir=cache, gradient_checkpointing=True, weighting_scheme="logit_normal")
    trainer(tmp_path / "b", max_epochs=2, enable_checkpointing=False).fit(
        resumed, loader(), ckpt_path=t1.checkpoint_callback.best_model_path)
    assert resumed.text_cache().misses == 0  # every caption came from the first run's shards
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)


def test_fast_dev_run_generates_and_exports(tiny_flux, kvasir, tmp_path):
    m = make(tiny_flux, export_lora=True, text_cache_dir=None)
    loader = DataLoader(kvasir, batch_size=2)
    trainer(tmp_path, fast_dev_run=True).fit(m, loader, loader)
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").exists()
    assert any((tmp_path / "cache" / "flux_text").glob("*/shard-r000-*.safetensors"))
    assert m._text["text_encoder_2"].device.type == "cpu" and not m._text["text_encoder_2"].training
    imgs = m.generate(MEDVQA_CAPTIONS[:2], num_images_per_prompt=2, seed=3)
    assert imgs.shape == (4, 3, 32, 32) and 0 <= imgs.min() and imgs.max() <= 1
    torch.testing.assert_close(m.generate(MEDVQA_CAPTIONS[:2], num_images_per_prompt=2, seed=3), imgs)
    info = m.generation_info()
    assert info["guidance_scale"] == 3.5 and info["train_guidance_scale"] == 1.0 and info["steps"] == 2


def test_bf16_frozen_weights_train_and_generate(tiny_flux, kvasir):
    m = make(tiny_flux, frozen_dtype="bfloat16")
    assert m.transformer.x_embedder.weight.dtype == torch.bfloat16
    loss = m.loss(next(iter(DataLoader(kvasir, batch_size=2))), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None and p.grad.dtype == torch.float32 for p in m.lora_parameters())
    assert m.text_cache().get("", kvasir[0]["caption"])["prompt_embeds"].dtype == torch.bfloat16
    img = m.generate(MEDVQA_CAPTIONS[:1], seed=0)
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()


def _random_lora(m, seed=0, scale=0.3):
    """Non-zero LoRA B matrices (a trained adapter's effect, without training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def test_bf16_validation_images_equal_the_stock_bf16_pipeline_with_the_saved_lora(tiny_flux, tmp_path):
    """With the shipped bf16 settings, generate() (what SampleGrid and the metric callbacks show) is what a user gets
    from FluxPipeline(torch_dtype=bf16).load_lora_weights(saved folder): the adapter is used in the dtype the file
    loads as, while the fp32 master weights train on unchanged."""
    from diffusers import FluxPipeline

    m = make(tiny_flux, frozen_dtype="bfloat16")
    _random_lora(m)
    masters = {n: p.detach().clone() for n, p in m.named_parameters() if "lora_" in n}
    m.save_lora(str(tmp_path / "lora"))
    mine = m.generate(MEDVQA_CAPTIONS[:2], seed=0)
    pipe = FluxPipeline.from_pretrained(tiny_flux, torch_dtype=torch.bfloat16, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(tmp_path / "lora"))
    stock = pipe(MEDVQA_CAPTIONS[:2], height=32, width=32, num_inference_steps=2, max_sequence_length=MAX_LEN,
                 output_type="pt", generator=[torch.Generator().manual_seed(k) for k in range(2)]).images.float()
    torch.testing.assert_close(mine, stock, atol=0, rtol=0)  # generate(seed=0): image k from seed 0 + k
    assert all(p.dtype == torch.float32 and torch.equal(p, masters[n]) for n, p in m.named_parameters() if "lora_" in n)
    # the fp32 adapter (what validation used before) gives other images: the comparison above can fail
    text = m.encode_prompts(MEDVQA_CAPTIONS[:2])
    with torch.no_grad():
        fp32 = m._pipeline()(prompt_embeds=text["prompt_embeds"], pooled_prompt_embeds=text["pooled_prompt_embeds"],
                             height=32, width=32, num_inference_steps=2, output_type="pt",
                             generator=[torch.Generator().manual_seed(k) for k in range(2)]).images.float()
    assert (fp32 - stock).abs().max() > 1e-3


def test_load_from_checkpoint_is_quiet_and_names_the_checkpoint_step(tiny_flux, kvasir, tmp_path):
    """Frozen base weights are absent from a LoRA checkpoint by design: loading it must not warn about each of them
    (thousands for FLUX); generation_info() names the checkpoint's step without a Trainer."""
    m = make(tiny_flux, text_cache_dir=None)
    t = trainer(tmp_path, max_steps=2)
    t.fit(m, DataLoader(torch.utils.data.Subset(kvasir, [0, 1]), batch_size=1))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        reloaded = FluxLoRAModule.load_from_checkpoint(t.checkpoint_callback.best_model_path)
    keys = [str(x.message) for x in w if "keys" in str(x.message).lower()]
    assert not keys, keys[0][:300]
    assert reloaded.generation_info()["lora_weights"] == "epoch=0,step=2"
    for (n, a), (_, b) in zip(m.state_dict().items(), reloaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)
