"""Tiny random-weight Kandinsky 2.2 and FLUX pipeline folders for tests, benches and offline demos.

Each builder writes a *real* pipeline folder with the stock diffusers class's ``save_pretrained`` so the code under
test loads it exactly like a local copy of ``kandinsky-community/kandinsky-2-2-prior``,
``kandinsky-community/kandinsky-2-2-decoder`` or ``black-forest-labs/FLUX.1-dev``. The component configs are the
``get_dummy_components()`` of diffusers' own pipeline tests (``tests/pipelines/kandinsky2_2/``,
``tests/pipelines/flux/test_pipeline_flux.py``), shrunk where that keeps them valid (32-px CLIP images).
Nothing here downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from msdm.testing import build_word_tokenizer, write_tiny_clip_tokenizer

# The tiny CLIP towers of diffusers' Kandinsky tests: hidden 32, projection 32 (= the prior's embedding_dim and the
# decoder's encoder_hid_dim, so image embeddings flow from prior to decoder).
TINY_EMBED_DIM = 32


def _tiny_clip_text_config(hidden_act: str = "quick_gelu"):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=TINY_EMBED_DIM, projection_dim=TINY_EMBED_DIM,
        intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=5, pad_token_id=1,
        vocab_size=1000, hidden_act=hidden_act,
    )


def _tokenizer_dir(path: Path) -> Path:
    # CLIPTokenizer needs vocab/merges files on disk; write them next to (not inside) the pipeline folder.
    d = path.parent / f".{path.name}-clip-tokenizer"
    write_tiny_clip_tokenizer(d, model_max_length=77)
    return d


def write_tiny_kandinsky_prior(path: str | os.PathLike, seed: int = 0, image_size: int = 32) -> str:
    """A tiny ``KandinskyV22PriorPipeline`` folder (prior, CLIP text + image towers, tokenizer, processor, scheduler)."""
    from diffusers import KandinskyV22PriorPipeline, PriorTransformer, UnCLIPScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    path = Path(path)
    tokenizer = CLIPTokenizer.from_pretrained(_tokenizer_dir(path))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(_tiny_clip_text_config())
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=TINY_EMBED_DIM, image_size=image_size, projection_dim=TINY_EMBED_DIM, intermediate_size=37,
        num_attention_heads=4, num_channels=3, num_hidden_layers=5, patch_size=14,
    ))
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=TINY_EMBED_DIM, num_layers=1)
    # The published prior stores the CLIP image-embedding statistics it was trained on; zeros (the default) would make
    # post_process_latents return zeros and the training normalisation divide by zero.
    with torch.no_grad():
        prior.clip_std.fill_(1.0)
        prior.clip_mean.zero_()
    processor = CLIPImageProcessor(
        crop_size=image_size, do_center_crop=True, do_normalize=True, do_resize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
        resample=3, size=image_size,
    )
    scheduler = UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000,
                                clip_sample=True, clip_sample_range=10.0)
    pipe = KandinskyV22PriorPipeline(prior=prior, image_encoder=image_encoder, text_encoder=text_encoder,
                                     tokenizer=tokenizer, scheduler=scheduler, image_processor=processor)
    pipe.save_pretrained(path)
    return str(path)


def write_tiny_kandinsky_decoder(path: str | os.PathLike, seed: int = 0) -> str:
    """A tiny ``KandinskyV22Pipeline`` folder (U-Net with image conditioning, MoVQ, DDPM scheduler). Scale factor 2."""
    from diffusers import DDPMScheduler, KandinskyV22Pipeline, UNet2DConditionModel, VQModel

    path = Path(path)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=8, addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64), layers_per_block=1,
        encoder_hid_dim=TINY_EMBED_DIM, encoder_hid_dim_type="image_proj", cross_attention_dim=TINY_EMBED_DIM,
        attention_head_dim=4, resnet_time_scale_shift="scale_shift", class_embed_type=None,
    )
    movq = VQModel(
        block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        in_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, norm_type="spatial",
        num_vq_embeddings=12, out_channels=3, up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        vq_embed_dim=4,
    )
    # The published decoder's scheduler_config.json: linear betas 0.00085 -> 0.012, epsilon prediction.
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, prediction_type="epsilon", steps_offset=1, thresholding=False)
    KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq).save_pretrained(path)
    return str(path)


def write_tiny_flux(path: str | os.PathLike, seed: int = 0, guidance_embeds: bool = True) -> str:
    """A tiny ``FluxPipeline`` folder mimicking FLUX.1-dev (guidance-distilled; 16 latent channels; VAE scale 2).

    Constraints of the architecture: ``sum(axes_dims_rope) == attention_head_dim``, ``joint_attention_dim`` = T5
    ``d_model``, ``pooled_projection_dim`` = CLIP ``hidden_size``. The T5 tokenizer is word-level over the MEDVQA-GI
    prompt vocabulary so that different prompts get different T5 embeddings.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    path = Path(path)
    tokenizer = CLIPTokenizer.from_pretrained(_tokenizer_dir(path))
    tokenizer_2 = build_word_tokenizer(kind="t5", model_max_length=512)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=TINY_EMBED_DIM, axes_dims_rope=[4, 4, 8],
        guidance_embeds=guidance_embeds,
    )
    text_encoder = CLIPTextModel(_tiny_clip_text_config(hidden_act="gelu"))
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        pad_token_id=tokenizer_2.pad_token_id, eos_token_id=tokenizer_2.eos_token_id, decoder_start_token_id=0,
    ))
    vae = AutoencoderKL(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4, 8),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), layers_per_block=1, latent_channels=16,
        norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    # FLUX.1-dev's scheduler_config.json (dynamic shifting; shift is used only without it).
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2, transformer=transformer,
    ).save_pretrained(path)
    return str(path)


# Prompts in the MEDVQA-GI 2024 style, for tests and demos.
MEDVQA_CAPTIONS = ["generate an image containing a polyp", "generate an image with 2 polyps",
                   "generate an image with no polyps", "generate an image containing a green/black box artefact"]


class FolderImageCaptions(torch.utils.data.Dataset):
    """The first ``n`` images of a folder in the msdm batch format, for tests and benches.

    Items: ``pixel_values`` ``[3, size, size]`` in [-1, 1] (centre crop, bicubic resize), ``caption`` (cycling through
    ``captions``), ``id`` (the file stem). The real DataModules live in ``datamodules/``.
    """

    def __init__(self, folder: str | os.PathLike, n: int = 4, size: int = 32, captions: list[str] | None = None):
        exts = {".jpg", ".jpeg", ".png"}
        self.files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in exts)[:n]
        if not self.files:
            raise FileNotFoundError(f"no images in {folder}")
        self.size = size
        self.captions = list(captions or MEDVQA_CAPTIONS)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        import numpy as np
        from PIL import Image

        img = Image.open(self.files[i]).convert("RGB")
        s = min(img.size)
        img = img.crop(((img.width - s) // 2, (img.height - s) // 2, (img.width + s) // 2, (img.height + s) // 2))
        x = torch.from_numpy(np.array(img.resize((self.size, self.size), Image.BICUBIC))).permute(2, 0, 1)
        return {"pixel_values": x.float() / 127.5 - 1, "caption": self.captions[i % len(self.captions)],
                "id": self.files[i].stem}
