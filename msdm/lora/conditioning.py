"""Conditioning inputs of the LoRA-tuned models, computed exactly as the stock pipelines compute them.

Training must see the conditioning the pipeline will feed at inference, so each function mirrors one pipeline
method (and a test compares them):

- :func:`encode_kandinsky_prompts` = ``KandinskyV22PriorPipeline._encode_prompt`` (CLIP text: projected
  ``text_embeds``, ``last_hidden_state``, padding mask; padded to the tokenizer's 77);
- :func:`encode_flux_prompts` = ``FluxPipeline.encode_prompt`` (pooled CLIP-L output + T5 token states padded to
  ``max_sequence_length``);
- :func:`clip_image_embeds` = ``CLIPImageProcessor`` + ``CLIPVisionModelWithProjection.image_embeds`` on the batch's
  ``pixel_values`` in [-1, 1] (done on tensors, on the GPU; bicubic resize of the shortest edge, centre crop,
  CLIP mean/std — the processor's recipe; tiny interpolation differences from PIL's bicubic remain).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def encode_kandinsky_prompts(tokenizer, text_encoder, prompts: list[str], device=None) -> dict[str, torch.Tensor]:
    """``{"text_embeds": [B, D], "text_hidden_states": [B, L, D'], "text_mask": [B, L] bool}``."""
    device = device if device is not None else text_encoder.device
    tok = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    out = text_encoder(tok.input_ids.to(device))
    return {
        "text_embeds": out.text_embeds,
        "text_hidden_states": out.last_hidden_state,
        "text_mask": tok.attention_mask.bool().to(device),
    }


@torch.no_grad()
def encode_flux_prompts(
    tokenizer, text_encoder, tokenizer_2, text_encoder_2, prompts: list[str], max_sequence_length: int = 512,
    device=None,
) -> dict[str, torch.Tensor]:
    """``{"prompt_embeds": [B, max_sequence_length, d_T5], "pooled_prompt_embeds": [B, d_CLIP]}``."""
    prompts = list(prompts)
    dev1 = device if device is not None else text_encoder.device
    dev2 = device if device is not None else text_encoder_2.device
    clip = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_overflowing_tokens=False, return_length=False, return_tensors="pt")
    pooled = text_encoder(clip.input_ids.to(dev1), output_hidden_states=False).pooler_output
    t5 = tokenizer_2(prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
                     return_length=False, return_overflowing_tokens=False, return_tensors="pt")
    embeds = text_encoder_2(t5.input_ids.to(dev2), output_hidden_states=False)[0]
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}


def _size(size) -> tuple[int | None, int | None, int | None]:
    """``(shortest_edge, height, width)`` of a processor size: a dict, transformers 5's ``SizeDict`` or an int."""
    if isinstance(size, int):
        return size, size, size
    get = size.get if hasattr(size, "get") else (lambda k, d=None: getattr(size, k, d))
    return get("shortest_edge"), get("height"), get("width")


def clip_preprocess(pixel_values: torch.Tensor, image_processor) -> torch.Tensor:
    """``pixel_values`` in [-1, 1] ``[B, 3, H, W]`` -> CLIP vision input, following ``image_processor``'s config."""
    x = (pixel_values.float() + 1) / 2
    short, height, width = _size(image_processor.size)
    _, crop_h, crop_w = _size(image_processor.crop_size)
    if short is None:  # {"height", "width"} style processor: plain resize
        x = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    else:
        h, w = x.shape[-2:]
        scale = short / min(h, w)
        new = (max(short, round(h * scale)), max(short, round(w * scale)))
        if new != (h, w):
            x = F.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False)
    if image_processor.do_center_crop:
        h, w = x.shape[-2:]
        top, left = max(0, (h - crop_h) // 2), max(0, (w - crop_w) // 2)
        x = x[..., top:top + crop_h, left:left + crop_w]
    x = x.clamp(0, 1)
    mean = torch.tensor(image_processor.image_mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(image_processor.image_std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def clip_image_embeds(image_encoder, image_processor, pixel_values: torch.Tensor) -> torch.Tensor:
    """The projected CLIP image embedding ``[B, D]`` of images in [-1, 1]."""
    dtype = image_encoder.dtype
    return image_encoder(clip_preprocess(pixel_values, image_processor).to(dtype)).image_embeds
