"""Published architecture configs of the large generators that msdm fine-tunes with LoRA.

The Hugging Face Hub is not always reachable (air-gapped clusters, CI), yet the trainable-parameter counts of
*Prompt to Polyp* Table 4 and the memory bench need the real architectures. These dicts are the ``config.json``
files of the published checkpoints, copied verbatim except for the ``_class_name`` / ``_diffusers_version`` /
``_name_or_path`` bookkeeping keys, so that ``Class(**CONFIG)`` builds the real model (on the meta device: no
memory, no weights).

Sources (hub id / subfolder / config.json):
- ``kandinsky-community/kandinsky-2-2-prior``   / ``prior``       -> :data:`KANDINSKY22_PRIOR`
- ``kandinsky-community/kandinsky-2-2-decoder`` / ``unet``        -> :data:`KANDINSKY22_DECODER_UNET`
- ``black-forest-labs/FLUX.1-dev``              / ``transformer`` -> :data:`FLUX1_DEV_TRANSFORMER`
- ``black-forest-labs/FLUX.1-dev``              / ``vae``, ``text_encoder``, ``text_encoder_2``, ``scheduler``
  -> :data:`FLUX1_DEV_VAE`, :data:`FLUX1_DEV_CLIP_TEXT`, :data:`FLUX1_DEV_T5`, :data:`FLUX1_DEV_SCHEDULER`
  (used by ``bench/flux_lora_memory.py`` to build a random-weight FLUX.1-dev of the true size).
- ``kandinsky-community/kandinsky-2-2-prior``   / ``text_encoder``, ``image_encoder``, ``image_processor``,
  ``scheduler`` -> :data:`KANDINSKY22_PRIOR_TEXT`, :data:`KANDINSKY22_PRIOR_IMAGE`,
  :data:`KANDINSKY22_PRIOR_IMAGE_PROCESSOR`, :data:`KANDINSKY22_PRIOR_SCHEDULER` (CLIP ViT-bigG-14 towers with a
  1280-d projection. Read from the Hub's pages: ``scheduler/scheduler_config.json`` at revision 40cd651,
  ``image_processor/preprocessor_config.json`` at c237466; the two tower configs as saved by fine-tunes of this
  model whose ``_name_or_path`` is ``kandinsky-community/kandinsky-2-2-prior`` — the same values as the LAION
  ViT-bigG-14 towers they come from)
- ``kandinsky-community/kandinsky-2-2-decoder`` / ``movq``, ``scheduler`` -> :data:`KANDINSKY22_DECODER_MOVQ`,
  :data:`KANDINSKY22_DECODER_SCHEDULER` (the MoVQ config is also ``MOVQ_CONFIG`` of diffusers'
  ``scripts/convert_kandinsky_to_diffusers.py``)
- ``openai/clip-vit-large-patch14`` / ``config.json`` ``text_config`` -> :data:`CLIP_VIT_L14_TEXT` (MSDM's paper text
  encoder; the same tower is FLUX.1-dev's ``text_encoder``)

The scale tests and ``msdm memory`` (:mod:`msdm.scale`) build these at full width with fewer layers.

Check: with these configs the LoRA counts reproduce the paper's Table 4 (Kandinsky prior + decoder, rank 4:
2.13 M, paper 2.1 M; FLUX.1-dev, rank 4: 11.21 M, paper 11.2 M) — see :mod:`msdm.lora.param_count` and its test.
"""

from __future__ import annotations

KANDINSKY22_PRIOR_ID = "kandinsky-community/kandinsky-2-2-prior"
KANDINSKY22_DECODER_ID = "kandinsky-community/kandinsky-2-2-decoder"
FLUX1_DEV_ID = "black-forest-labs/FLUX.1-dev"

# PriorTransformer: 20 transformer layers of width 32 x 64 = 2048 over CLIP ViT-bigG embeddings (1280).
KANDINSKY22_PRIOR = {
    "added_emb_type": "prd",
    "additional_embeddings": 4,
    "attention_head_dim": 64,
    "clip_embed_dim": None,
    "dropout": 0.0,
    "embedding_dim": 1280,
    "embedding_proj_dim": None,
    "embedding_proj_norm_type": None,
    "encoder_hid_proj_type": "linear",
    "norm_in_type": None,
    "num_attention_heads": 32,
    "num_embeddings": 77,
    "num_layers": 20,
    "time_embed_act_fn": "silu",
    "time_embed_dim": None,
}

# UNet2DConditionModel of the decoder: conditioned on the CLIP image embedding (addition_embed_type="image",
# encoder_hid_dim_type="image_proj"); predicts epsilon and variance (out_channels = 2 x 4).
KANDINSKY22_DECODER_UNET = {
    "act_fn": "silu",
    "addition_embed_type": "image",
    "addition_embed_type_num_heads": 64,
    "attention_head_dim": 64,
    "block_out_channels": [384, 768, 1152, 1536],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 768,
    "cross_attention_norm": None,
    "down_block_types": [
        "ResnetDownsampleBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
    ],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": 1280,
    "encoder_hid_dim_type": "image_proj",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 3,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 8,
    "projection_class_embeddings_input_dim": None,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "scale_shift",
    "sample_size": 64,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "up_block_types": [
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "ResnetUpsampleBlock2D",
    ],
    "upcast_attention": False,
    "use_linear_projection": False,
}

# FluxTransformer2DModel: 19 double-stream (MM-DiT) + 38 single-stream blocks, width 24 x 128 = 3072;
# guidance-distilled (guidance_embeds=True).
FLUX1_DEV_TRANSFORMER = {
    "attention_head_dim": 128,
    "axes_dims_rope": [16, 56, 56],
    "guidance_embeds": True,
    "in_channels": 64,
    "joint_attention_dim": 4096,
    "num_attention_heads": 24,
    "num_layers": 19,
    "num_single_layers": 38,
    "patch_size": 1,
    "pooled_projection_dim": 768,
}

FLUX1_DEV_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 16,
    "latents_mean": None,
    "latents_std": None,
    "layers_per_block": 2,
    "mid_block_add_attention": True,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "use_post_quant_conv": False,
    "use_quant_conv": False,
}

# CLIP ViT-L/14 text tower (openai/clip-vit-large-patch14), only its pooled output conditions FLUX.
FLUX1_DEV_CLIP_TEXT = {
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}

# T5 v1.1 XXL encoder (google/t5-v1_1-xxl), 4.7 B parameters.
FLUX1_DEV_T5 = {
    "d_ff": 10240,
    "d_kv": 64,
    "d_model": 4096,
    "decoder_start_token_id": 0,
    "dense_act_fn": "gelu_new",
    "dropout_rate": 0.1,
    "eos_token_id": 1,
    "feed_forward_proj": "gated-gelu",
    "initializer_factor": 1.0,
    "is_encoder_decoder": True,
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-06,
    "num_decoder_layers": 24,
    "num_heads": 64,
    "num_layers": 24,
    "pad_token_id": 0,
    "relative_attention_max_distance": 128,
    "relative_attention_num_buckets": 32,
    "tie_word_embeddings": False,
    "vocab_size": 32128,
}

FLUX1_DEV_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}


# openai/clip-vit-large-patch14: the text tower of the paper's MSDM (Prompt to Polyp §4.2.1), 768-d, 77 positions.
# FLUX.1-dev's text_encoder/config.json is this tower too.
CLIP_VIT_L14_TEXT = FLUX1_DEV_CLIP_TEXT

# kandinsky-2-2-prior / text_encoder: CLIP ViT-bigG-14 text tower (laion/CLIP-ViT-bigG-14-laion2B-39B-b160k) with its
# 1280-d text projection (CLIPTextModelWithProjection).
KANDINSKY22_PRIOR_TEXT = {
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "pad_token_id": 1,
    "projection_dim": 1280,
    "vocab_size": 49408,
}

# kandinsky-2-2-prior / image_encoder: CLIP ViT-bigG-14 vision tower, 224² / patch 14, 1280-d image projection
# (CLIPVisionModelWithProjection): its embedding is the prior's target and the decoder's condition.
KANDINSKY22_PRIOR_IMAGE = {
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_size": 1664,
    "image_size": 224,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "layer_norm_eps": 1e-05,
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 48,
    "patch_size": 14,
    "projection_dim": 1280,
}

# kandinsky-2-2-prior / image_processor / preprocessor_config.json (CLIPImageProcessor, bicubic, OpenAI CLIP stats).
KANDINSKY22_PRIOR_IMAGE_PROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}

# kandinsky-2-2-prior / scheduler / scheduler_config.json
KANDINSKY22_PRIOR_SCHEDULER = {
    "clip_sample": True,
    "clip_sample_range": 10.0,
    "num_train_timesteps": 1000,
    "prediction_type": "sample",
    "variance_type": "fixed_small_log",
}

# kandinsky-2-2-decoder / movq / config.json: MoVQ (VQModel with spatially conditioned norms), f = 8, 4 latent channels.
KANDINSKY22_DECODER_MOVQ = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 256, 512],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "norm_type": "spatial",
    "num_vq_embeddings": 16384,
    "out_channels": 3,
    "sample_size": 32,
    "scaling_factor": 0.18215,
    "up_block_types": ["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
    "vq_embed_dim": 4,
}

# kandinsky-2-2-decoder / scheduler / scheduler_config.json (set_alpha_to_one is a DDIM key DDPMScheduler ignores;
# load with DDPMScheduler.from_config)
KANDINSKY22_DECODER_SCHEDULER = {
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "thresholding": False,
}
