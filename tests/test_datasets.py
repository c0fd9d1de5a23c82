"""keras_ln.datasets: bundled sets, synthetic sequences, a user's CSV and .npz."""

import numpy as np
import pandas as pd
import pytest
import sklearn.datasets

from keras_ln import datasets


@pytest.mark.parametrize(
    "name, shape, task, n_classes",
    [
        ("breast_cancer", (569, 30), "binary", 2),
        ("wine", (178, 13), "multiclass", 3),
        ("digits", (1797, 64), "multiclass", 10),
        ("diabetes", (442, 10), "regression", None),
        ("sequential_digits", (1797, 8, 8), "multiclass", 10),
        ("adding_problem", (1000, 50, 2), "regression", None),
    ],
)
def test_bundled_shapes_and_tasks(name, shape, task, n_classes):
    X, y, got_task = datasets.load(name)
    assert X.shape == shape
    assert y.shape == (shape[0],)
    assert got_task == task
    assert X.dtype == np.float32
    assert np.all(np.isfinite(X))
    if n_classes:
        assert len(np.unique(y)) == n_classes
    assert datasets.infer_task(y) == task


def test_sequential_digits_reads_the_image_row_by_row():
    X, y, _ = datasets.load_sequential_digits()
    images, target = sklearn.datasets.load_digits(return_X_y=True)
    np.testing.assert_allclose(X[5, 3], images[5, 24:32] / 16.0, rtol=1e-6)
    np.testing.assert_array_equal(y, target)
    assert X.min() >= 0 and X.max() <= 1


def test_adding_problem_target_is_the_sum_of_the_marked_values():
    X, y, task = datasets.make_adding_problem(n_samples=64, n_timesteps=12, random_state=3)
    assert X.shape == (64, 12, 2) and task == "regression"
    markers = X[:, :, 1]
    np.testing.assert_array_equal(markers.sum(axis=1), 2)
    # one marker in each half
    np.testing.assert_array_equal(markers[:, :6].sum(axis=1), 1)
    np.testing.assert_allclose(y, (X[:, :, 0] * markers).sum(axis=1), rtol=1e-5)
    X2, y2, _ = datasets.make_adding_problem(n_samples=64, n_timesteps=12, random_state=3)
    np.testing.assert_array_equal(X, X2)
    X3, _, _ = datasets.make_adding_problem(n_samples=64, n_timesteps=12, random_state=4)
    assert not np.array_equal(X, X3)


@pytest.mark.parametrize("kwargs, word", [({"n_timesteps": 1}, "n_timesteps"), ({"n_samples": 0}, "n_samples")])
def test_adding_problem_rejects_bad_sizes(kwargs, word):
    with pytest.raises(ValueError, match=word):
        datasets.make_adding_problem(**kwargs)


def test_unknown_dataset_lists_the_names():
    with pytest.raises(ValueError, match="breast_cancer"):
        datasets.load("mnist")


@pytest.mark.parametrize(
    "y, task",
    [
        (np.array(["a", "b", "a"]), "binary"),
        (np.array(["a", "b", "c"]), "multiclass"),
        (np.array([0, 1, 1, 0]), "binary"),
        (np.array([0.5, 1.25, 3.0, 7.5]), "regression"),
        (np.arange(30), "regression"),
        (np.array([True, False, True]), "binary"),
    ],
)
def test_infer_task(y, task):
    assert datasets.infer_task(y) == task


def _write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_features_come_parsed_not_encoded(tmp_path):
    path = _write(
        tmp_path,
        "age,color,size,label\n"
        "30,red,1.5,yes\n"
        ",blue,2.5,no\n"
        "50,,3.5,yes\n"
        "40,red,,no\n",
    )
    X, y, task = datasets.load_csv(path, "label")
    assert task == "binary"
    assert list(y) == ["yes", "no", "yes", "no"]
    # encoding and imputation are the model's (keras_ln.automl.make_preprocessor), fitted on training rows
    assert list(X.columns) == ["age", "color", "size"]
    assert X["age"].dtype == np.float64 and X["size"].dtype == np.float64 and X["color"].dtype == object
    np.testing.assert_array_equal(X["age"].isna(), [False, True, False, False])
    assert X["color"].tolist()[:2] == ["red", "blue"] and pd.isna(X["color"][2])


def test_csv_regression_target(tmp_path):
    rows = "\n".join(f"{i},{i * 0.37:.3f}" for i in range(20))
    X, y, task = datasets.load_csv(_write(tmp_path, "x,y\n" + rows + "\n"), "y")
    assert task == "regression" and X.shape == (20, 1) and y.dtype == np.float64
    assert X["x"].dtype == np.float64


def test_csv_missing_target_column_names_it(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"target='label'.*Columns: \['a', 'b'\]"):
        datasets.load_csv(path, "label")


def test_csv_unparseable_number_names_the_column_and_row(tmp_path):
    path = _write(tmp_path, "a,b,y\n1,2,0\n3,4,1\n5,oops,0\n7,8,1\n9,10,0\n")
    with pytest.raises(ValueError, match=r"column 'b'.*row 4: 'oops'"):
        datasets.load_csv(path, "y")


def test_csv_missing_target_values_are_reported(tmp_path):
    path = _write(tmp_path, "a,y\n1,0\n2,\n3,1\n")
    with pytest.raises(ValueError, match="missing value"):
        datasets.load_csv(path, "y")


def test_csv_that_is_not_a_csv(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="Cannot parse"):
        datasets.load_csv(path, "y")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        datasets.load_csv(tmp_path / "nope.csv", "y")


def test_npz_round_trip_and_errors(tmp_path, rng):
    X = rng.normal(size=(12, 5, 3))
    y = rng.integers(0, 3, size=12)
    np.savez(tmp_path / "ok.npz", X=X, y=y)
    X2, y2, task = datasets.load_npz(tmp_path / "ok.npz")
    assert X2.shape == (12, 5, 3) and X2.dtype == np.float32
    np.testing.assert_array_equal(y2, y)
    assert task == "multiclass"

    np.savez(tmp_path / "nokey.npz", X=X)
    with pytest.raises(ValueError, match=r"missing \['y'\]"):
        datasets.load_npz(tmp_path / "nokey.npz")
    np.savez(tmp_path / "dims.npz", X=X[..., None], y=y)
    with pytest.raises(ValueError, match="shape"):
        datasets.load_npz(tmp_path / "dims.npz")
    np.savez(tmp_path / "len.npz", X=X, y=y[:-1])
    with pytest.raises(ValueError, match="y in"):
        datasets.load_npz(tmp_path / "len.npz")
    X[0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", X=X, y=y)
    with pytest.raises(ValueError, match="nan.npz.*NaN fill whole time steps at the end"):
        datasets.load_npz(tmp_path / "nan.npz")
    X[0, 0, 0] = np.inf
    np.savez(tmp_path / "inf.npz", X=X[:, :, 0], y=y)
    with pytest.raises(ValueError, match="infinite"):
        datasets.load_npz(tmp_path / "inf.npz")
    (tmp_path / "garbage.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="Cannot read"):
        datasets.load_npz(tmp_path / "garbage.npz")


def test_npz_with_ragged_sequences_and_table_gaps(tmp_path):
    X, y, _ = datasets.make_ragged_sequences(n_samples=10, min_timesteps=2, max_timesteps=5, random_state=0)
    np.savez(tmp_path / "ragged.npz", X=X, y=y)
    X2, _, _ = datasets.load_npz(tmp_path / "ragged.npz")
    np.testing.assert_array_equal(X2, X)  # the padding stays NaN
    table = np.ones((10, 3))
    table[2, 1] = np.nan  # a missing value in a table: imputed later, not an error here
    np.savez(tmp_path / "table.npz", X=table, y=y)
    assert np.isnan(datasets.load_npz(tmp_path / "table.npz")[0][2, 1])


def test_ragged_sequences_are_padded_at_the_end_only():
    X, y, task = datasets.load("ragged_sequences")
    assert X.shape == (300, 24, 2) and X.dtype == np.float32 and task == "multiclass"
    assert sorted(np.unique(y)) == [0, 1, 2]
    lengths = datasets.check_sequences(X)  # raises unless every NaN is trailing padding
    assert lengths.min() == 8 and lengths.max() == 24
    np.testing.assert_array_equal(lengths, (~np.isnan(X[:, :, 0])).sum(axis=1))
    # the phase turns (class + 1) times over the sequence's own length
    X2, y2, _ = datasets.make_ragged_sequences(n_samples=50, noise=0.0, random_state=3)
    for x, c, t in zip(X2, y2, datasets.sequence_lengths(X2)):
        turns = np.unwrap(np.arctan2(x[:t, 0], x[:t, 1]))
        assert (turns[-1] - turns[0]) * t / (t - 1) == pytest.approx(2 * np.pi * (c + 1), rel=1e-4)
    np.testing.assert_array_equal(datasets.make_ragged_sequences(n_samples=50, noise=0.0, random_state=3)[0], X2)
    with pytest.raises(ValueError, match="max_timesteps"):
        datasets.make_ragged_sequences(min_timesteps=5, max_timesteps=4)


def test_pad_sequences():
    X = datasets.pad_sequences([np.ones((2, 3)), np.zeros((4, 3))])
    assert X.shape == (2, 4, 3) and np.isnan(X[0, 2:]).all() and not np.isnan(X[1]).any()
    np.testing.assert_array_equal(datasets.sequence_lengths(X), [2, 4])
    with pytest.raises(ValueError, match="same number of features"):
        datasets.pad_sequences([np.ones((2, 3)), np.ones((2, 2))])

