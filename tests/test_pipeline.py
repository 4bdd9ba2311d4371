"""The input pipeline: shapes, dtypes, value ranges, defect-biased crops, determinism, memory bound."""

from __future__ import annotations

import numpy as np
import pytest
from _train_child import make_tiny_dagm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagm_helpers.data import pipeline
from dagm_helpers.data.layout import scan
from dagm_helpers.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = make_tiny_dagm(tmp_path_factory.mktemp("tiny"), n_train=8, n_test=4, size=48)
    return scan(root)


def _arrays(n=6, h=32, w=32, seed=0, defective=(1, 3)):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    for i in defective:
        masks[i, h // 2 : h // 2 + 3, w // 3 : w // 3 + 2] = 1  # a 3x2 defect: 6 pixels
    return images, masks


def _batches(ds, n=None):
    out = []
    for i, (x, y) in enumerate(ds):
        if n is not None and i >= n:
            break
        out.append((x.numpy(), y.numpy()))
    return out


# ----------------------------------------------------------------------------- numpy loader
def test_load_arrays_shapes_and_values(tiny):
    train = tiny.filter(split="Train")
    images, masks = pipeline.load_arrays(train, size=32)
    assert images.shape == masks.shape == (8, 32, 32)
    assert images.dtype == masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    # every other image is defective in the tiny set, and only those have mask pixels
    has_defect = masks.reshape(8, -1).max(axis=1) > 0
    assert has_defect.tolist() == [s.defective for s in train]
    # defects are bright (220) on ~100 grey: the mask marks the bright pixels
    assert images[masks == 1].mean() > 180 and images[masks == 0].mean() < 130


def test_load_arrays_refuses_a_cache_beyond_the_bound(tiny, monkeypatch):
    monkeypatch.setenv(pipeline.CACHE_ENV, "0.000001")  # ~1 kB
    with pytest.raises(DatasetError, match="needs .* GB of memory.*DAGM_MAX_CACHE_GB"):
        pipeline.load_arrays(tiny, size=512)


def test_cache_bytes_formula():
    # one DAGM class (1150 images at 512x512): image + mask as uint8
    assert pipeline.cache_bytes(1150, 512, 512) == 1150 * 512 * 512 * 2


def test_load_arrays_empty_selection_is_an_error():
    with pytest.raises(DatasetError, match="no samples"):
        pipeline.load_arrays([])


# ----------------------------------------------------------------------------- tf.data
def test_make_dataset_full_images(tiny):
    ds = pipeline.make_dataset(tiny.filter(split="Train"), batch_size=3, image_size=32)
    batches = _batches(ds)
    assert [b[0].shape for b in batches] == [
        (3, 32, 32, 1),
        (3, 32, 32, 1),
        (2, 32, 32, 1),
    ]  # keeps remainder
    for x, y in batches:
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 255.0 and x.max() > 1.0  # raw grey levels, not 0..1
        assert set(np.unique(y)) <= {0.0, 1.0}


def test_unshuffled_single_pass_is_the_arrays_in_order():
    images, masks = _arrays()
    x, y = _batches(pipeline.dataset_from_arrays(images, masks, batch_size=6))[0]
    np.testing.assert_array_equal(x[..., 0], images.astype(np.float32))
    np.testing.assert_array_equal(y[..., 0], masks.astype(np.float32))


def test_crops_sizes_and_training_batches_drop_remainder():
    images, masks = _arrays(n=5)
    ds = pipeline.dataset_from_arrays(
        images, masks, batch_size=2, crop_size=16, augment=True, shuffle=True, repeat=True, steps_per_epoch=4
    )
    batches = _batches(ds, 10)
    assert all(x.shape == (2, 16, 16, 1) and y.shape == (2, 16, 16, 1) for x, y in batches)


def test_augmentation_moves_image_and_mask_together():
    images, masks = _arrays(n=4, h=24, w=24)
    images[masks == 1] = 255  # mark defects in the image so we can check they stay aligned
    images[masks == 0] = np.minimum(images[masks == 0], 200)
    ds = pipeline.dataset_from_arrays(
        images, masks, batch_size=4, crop_size=16, defect_crop_fraction=1.0, augment=True, repeat=True, seed=3
    )
    for x, y in _batches(ds, 8):
        np.testing.assert_array_equal(x[..., 0] == 255, y[..., 0] == 1)


def test_defect_biased_crops_contain_defects():
    # 2 of 6 images are defective with a 6-pixel defect in a 32x32 image; a uniform 8x8 crop
    # rarely hits it, a defect-centred one always does.
    images, masks = _arrays(n=6, defective=(1, 3))
    defective = masks.reshape(6, -1).max(axis=1) > 0

    def hit_rate(fraction):
        ds = pipeline.dataset_from_arrays(
            images,
            masks,
            batch_size=6,
            crop_size=8,
            defect_crop_fraction=fraction,
            shuffle=False,
            repeat=True,
            steps_per_epoch=1,
            seed=1,
        )
        hits = [y.reshape(6, -1).max(axis=1)[defective] for _, y in _batches(ds, 60)]
        return float(np.mean(np.concatenate(hits)))

    assert hit_rate(1.0) == 1.0  # every defect-centred crop contains defect pixels
    rate = hit_rate(0.6)
    assert 0.6 - 0.1 <= rate <= 0.6 + 0.25  # 60% forced, plus uniform crops that hit by chance
    assert hit_rate(0.0) < 0.35


def test_defective_share_oversamples_defective_images():
    # 1 defective image of 10: without oversampling it is 10% of the elements
    images, masks = _arrays(n=10, defective=(4,))

    def share(value):
        ds = pipeline.dataset_from_arrays(
            images, masks, batch_size=10, defective_share=value, shuffle=True, repeat=True, seed=2
        )
        flags = [y.reshape(10, -1).max(axis=1) > 0 for _, y in _batches(ds, 40)]
        return float(np.mean(np.concatenate(flags)))

    assert share(None) == pytest.approx(0.1)  # each image exactly once per epoch
    assert 0.45 <= share(0.5) <= 0.65  # half drawn from the defective images, plus its own turn
    assert share(1.0) == 1.0


def test_defective_share_is_reproducible_and_checked():
    images, masks = _arrays(n=8, defective=(1, 5))
    kw = dict(batch_size=4, crop_size=16, defective_share=0.5, shuffle=True, repeat=True, seed=4)
    a = _batches(pipeline.dataset_from_arrays(images, masks, **kw), 6)
    b = _batches(pipeline.dataset_from_arrays(images, masks, **kw), 6)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(ConfigError, match="defective_share must be between 0 and 1"):
        pipeline.dataset_from_arrays(images, masks, batch_size=2, defective_share=1.5, shuffle=True)
    with pytest.raises(ConfigError, match="needs shuffle"):
        pipeline.dataset_from_arrays(images, masks, batch_size=2, defective_share=0.5)
    clean = np.zeros_like(masks)  # no defective image: used as it is
    ds = pipeline.dataset_from_arrays(
        images, clean, batch_size=8, defective_share=0.5, shuffle=True, repeat=True
    )
    assert all(y.max() == 0 for _, y in _batches(ds, 2))


def test_same_seed_same_batches_other_seed_differs():
    images, masks = _arrays(n=7)
    kw = dict(
        batch_size=3,
        crop_size=16,
        defect_crop_fraction=0.5,
        augment=True,
        intensity_jitter=True,
        shuffle=True,
        repeat=True,
        steps_per_epoch=3,
    )
    a = _batches(pipeline.dataset_from_arrays(images, masks, seed=5, **kw), 6)
    b = _batches(pipeline.dataset_from_arrays(images, masks, seed=5, **kw), 6)
    c = _batches(pipeline.dataset_from_arrays(images, masks, seed=6, **kw), 6)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))


def test_epoch_data_depends_only_on_seed_and_epoch():
    """A dataset started at epoch 2 (a resumed run) yields exactly epoch 2 of a fresh one."""
    images, masks = _arrays(n=7)
    kw = dict(batch_size=2, crop_size=16, augment=True, shuffle=True, repeat=True, steps_per_epoch=3, seed=9)
    fresh = _batches(pipeline.dataset_from_arrays(images, masks, **kw), 9)
    resumed = _batches(pipeline.dataset_from_arrays(images, masks, start_epoch=2, **kw), 3)
    for (xf, yf), (xr, yr) in zip(fresh[6:9], resumed, strict=True):
        np.testing.assert_array_equal(xf, xr)
        np.testing.assert_array_equal(yf, yr)


def test_shuffled_epoch_is_a_permutation():
    images, masks = _arrays(n=6)
    images[:, 0, 0] = np.arange(6)  # tag each image
    ds = pipeline.dataset_from_arrays(images, masks, batch_size=6, shuffle=True, repeat=True, seed=2)
    (x0, _), (x1, _) = _batches(ds, 2)
    tags0, tags1 = x0[:, 0, 0, 0].astype(int), x1[:, 0, 0, 0].astype(int)
    assert sorted(tags0) == sorted(tags1) == list(range(6))
    assert tags0.tolist() != tags1.tolist()  # a fresh order each epoch (6! orders: a tie is 1/720)


def test_intensity_jitter_changes_grey_levels_within_range():
    images, masks = _arrays(n=4)
    plain = _batches(pipeline.dataset_from_arrays(images, masks, batch_size=4))[0][0]
    jit = _batches(pipeline.dataset_from_arrays(images, masks, batch_size=4, intensity_jitter=True))[0][0]
    assert not np.allclose(plain, jit)
    assert jit.min() >= 0.0 and jit.max() <= 255.0


def test_bad_arguments_are_clear_errors():
    images, masks = _arrays()
    with pytest.raises(ConfigError, match="crop size 64 is larger than the images"):
        pipeline.dataset_from_arrays(images, masks, batch_size=2, crop_size=64)
    with pytest.raises(DatasetError, match="same shape"):
        pipeline.dataset_from_arrays(images, masks[:, :10], batch_size=2)
    with pytest.raises(ConfigError, match="defect_crop_fraction"):
        pipeline.dataset_from_arrays(images, masks, batch_size=2, crop_size=8, defect_crop_fraction=1.5)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(8, 40),
    w=st.integers(8, 40),
    crop=st.one_of(st.none(), st.integers(4, 8)),
    fraction=st.floats(0.0, 1.0),
    augment=st.booleans(),
    jitter=st.booleans(),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_image_and_mask_always_agree(h, w, crop, fraction, augment, jitter, batch, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
    masks = (rng.random((3, h, w)) < 0.05).astype(np.uint8) * rng.integers(1, 255)  # any nonzero counts as 1
    ds = pipeline.dataset_from_arrays(
        images,
        masks,
        batch_size=batch,
        crop_size=crop,
        defect_crop_fraction=fraction,
        augment=augment,
        intensity_jitter=jitter,
        shuffle=True,
        repeat=True,
        steps_per_epoch=2,
        seed=seed,
    )
    for x, y in _batches(ds, 2):
        assert x.shape == y.shape and x.shape[0] == batch and x.shape[-1] == 1
        assert x.shape[1:3] == ((crop, crop) if crop else (h, w))
        assert set(np.unique(y)) <= {0.0, 1.0}
        assert x.min() >= 0.0 and x.max() <= 255.0
