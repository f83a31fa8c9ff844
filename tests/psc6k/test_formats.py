import numpy as np
import pytest

from psc6k.errors import FormatError
from psc6k.formats import (Annotations, TrainPairs, ps_to_st, read_annotations, read_clicks,
                           read_keypoints_csv, read_pair_list, read_train_pairs, st_to_ps,
                           write_clicks, write_keypoints_csv, write_test_pairs_ps, write_test_pairs_st,
                           write_train_pairs_ps, write_train_pairs_st)
from psc6k.sketchy import SKETCHY_CATEGORIES, class_index, photo_id_of_sketch, read_id_list
from psc6k.testing import make_annotations


HEADER = "photo,sketch,class,XA,YA,XB,YB\n"
P = "rendered_256x256/256x256/photo/tx_000100000000/airplane/n02691156_10151.jpg"
S = "rendered_256x256/256x256/sketch/tx_000100000000/airplane/n02691156_10151-3.png"
L8 = ";".join(["1.5"] * 8)


def test_ps_round_trip_is_byte_exact(tmp_path, small_annotations):
    a = tmp_path / "a.csv"
    write_test_pairs_ps(small_annotations, a)
    back = read_annotations(a)
    np.testing.assert_array_equal(back.photo_kps, small_annotations.photo_kps)
    np.testing.assert_array_equal(back.sketch_kps, small_annotations.sketch_kps)
    assert back.photo == small_annotations.photo and back.sketch == small_annotations.sketch
    assert back.cls.tolist() == small_annotations.cls.tolist()
    b = tmp_path / "b.csv"
    write_test_pairs_ps(back, b)
    assert a.read_bytes() == b.read_bytes()


def test_st_has_two_rows_per_pair_and_converts_back(tmp_path, small_annotations):
    ps, st, ps2 = tmp_path / "ps.csv", tmp_path / "st.csv", tmp_path / "ps2.csv"
    write_test_pairs_ps(small_annotations, ps)
    ps_to_st(ps, st)
    lines = st.read_text().splitlines()
    assert lines[0] == "source_image,target_image,class,XA,YA,XB,YB"
    assert len(lines) == 1 + 2 * len(small_annotations)
    # photo->sketch row then sketch->photo row with A/B swapped
    r1, r2 = lines[1].split(","), lines[2].split(",")
    assert r1[0] == r2[1] and r1[1] == r2[0] and r1[3] == r2[5] and r1[6] == r2[4]
    st_to_ps(st, ps2)
    assert ps.read_bytes() == ps2.read_bytes()


def test_class_is_alphabetical_index_of_sketchy_names():
    assert class_index("airplane") == 1 and class_index("zebra") == 125
    assert class_index("car_(sedan)") == SKETCHY_CATEGORIES.index("car_(sedan)") + 1
    ann = make_annotations(categories=("zebra", "ant", "cat"), n_pairs=3)
    assert ann.cls.tolist() == [125, 3, 25]


def test_custom_categories_are_inferred_sorted():
    kps = np.zeros((2, 8, 2))
    ann = Annotations.from_arrays(["p/photo/zz_shape/a.jpg", "p/photo/aa_shape/b.jpg"],
                                  ["s/sketch/zz_shape/a-1.png", "s/sketch/aa_shape/b-1.png"], kps, kps)
    assert ann.categories == ("aa_shape", "zz_shape") and ann.cls.tolist() == [2, 1]


@pytest.mark.parametrize("row, column, message", [
    (f"{P},{S},1,{L8},{L8},{L8}", None, "expected 7 fields"),
    (f"{P},{S},1,{';'.join(['1'] * 7)},{L8},{L8},{L8}", "XA", "expected 8 values"),
    (f"{P},{S},1,{L8.replace('1.5', 'abc', 1)},{L8},{L8},{L8}", "XA", "not a number"),
    (f"{P},{S},1,{L8},{L8.replace('1.5', 'nan', 1)},{L8},{L8}", "YA", "must be finite"),
    (f"{P},{S},1,{L8},{L8},{L8.replace('1.5', '256.1', 1)},{L8}", "XB", "outside"),
    (f"{P},{S},1,{L8},{L8},{L8},{L8.replace('1.5', '-0.6', 1)}", "YB", "outside"),
    (f"{P},{S},7,{L8},{L8},{L8},{L8}", "class", "does not match category 'airplane'"),
    (f"{P},{S},x,{L8},{L8},{L8},{L8}", "class", "must be an integer"),
    (f"{P.replace('airplane', 'spaceship')},{S},1,{L8},{L8},{L8},{L8}", "photo", "unknown category"),
])
def test_validation_names_file_line_and_column(tmp_path, row, column, message):
    good = f"{P},{S},1,{L8},{L8},{L8},{L8}\n"
    f = tmp_path / "bad.csv"
    f.write_text(HEADER + good.replace("10151", "999") + row + "\n")
    with pytest.raises(FormatError) as exc:
        read_annotations(f, categories=SKETCHY_CATEGORIES)
    text = str(exc.value)
    assert str(f) in text and "line 3" in text and message in text
    if column:
        assert f"column {column!r}" in text


def test_mixed_category_names_get_a_hint(tmp_path):
    f = tmp_path / "typo.csv"
    ant = f"{P.replace('airplane', 'ant')},{S.replace('airplane', 'ant')},3,{L8},{L8},{L8},{L8}\n"
    f.write_text(HEADER + f"{P},{S},1,{L8},{L8},{L8},{L8}\n" + f"{P.replace('airplane', 'airplain')},{S},1,{L8},{L8},{L8},{L8}\n" + ant)
    with pytest.raises(FormatError, match="line 2.*\\['airplain'\\] is not among the 125 Sketchy categories"):
        read_annotations(f)


def test_wrong_column_set_and_duplicate_pair(tmp_path):
    f = tmp_path / "cols.csv"
    f.write_text("photo,sketch,class,XA,YA,XB\n")
    with pytest.raises(FormatError, match=r"missing \['YB'\]"):
        read_annotations(f)
    f.write_text(HEADER + f"{P},{S},1,{L8},{L8},{L8},{L8}\n" * 2)
    with pytest.raises(FormatError, match="line 3.*duplicate pair.*first seen on line 2"):
        read_annotations(f)
    f.write_text(HEADER)
    with pytest.raises(FormatError, match="no pairs"):
        read_annotations(f)


def test_crlf_and_bom_are_tolerated(tmp_path):
    f = tmp_path / "crlf.csv"
    f.write_bytes(("\ufeff" + HEADER + f"{P},{S},1,{L8},{L8},{L8},{L8}\n\n").replace("\n", "\r\n").encode())
    assert len(read_annotations(f)) == 1


def test_st_directions_must_agree(tmp_path, small_annotations):
    st = tmp_path / "st.csv"
    write_test_pairs_st(small_annotations.subset([0]), st)
    lines = st.read_text().splitlines()
    parts = lines[2].split(",")
    parts[3] = ";".join(["3.0"] * 8)
    st.write_text("\n".join([lines[0], lines[1], ",".join(parts)]) + "\n")
    with pytest.raises(FormatError, match="disagree"):
        read_annotations(st)


def test_train_pairs_round_trip(tmp_path):
    tp = TrainPairs.from_paths([P, P.replace("10151", "2")], [S, S.replace("10151", "2")])
    ps, st = tmp_path / "train_ps.csv", tmp_path / "train_st.csv"
    write_train_pairs_ps(tp, ps)
    write_train_pairs_st(tp, st)
    assert len(ps.read_text().splitlines()) == 1 + 2 * 2
    assert len(st.read_text().splitlines()) == 1 + 4 * 2
    for f in (ps, st):
        back = read_train_pairs(f)
        assert back.photo == tp.photo and back.sketch == tp.sketch and back.cls.tolist() == [1, 1]
    assert read_pair_list(ps).photo == tp.photo


def test_keypoints_and_clicks_round_trip(tmp_path):
    kps = {S: np.arange(16, dtype=float).reshape(8, 2) + 0.25}
    f = tmp_path / "kp.csv"
    write_keypoints_csv(kps, f)
    assert f.read_text().splitlines()[0] == "sketch,X,Y"
    np.testing.assert_array_equal(read_keypoints_csv(f)[S], kps[S])
    clicks = [dict(participant="p1", photo=P, sketch=S, keypoint=k, x=10.5 + k, y=20.25, rt_ms=900,
                   created_at="2026-01-01T00:00:00Z") for k in range(8)]
    c = tmp_path / "clicks.csv"
    write_clicks(clicks, c)
    df = read_clicks(c)
    assert df["keypoint"].tolist() == list(range(8)) and df["x"].iloc[3] == 13.5
    c.write_text(c.read_text().replace(",7,17.5,", ",9,17.5,"))
    with pytest.raises(FormatError, match="line 9.*column 'keypoint'"):
        read_clicks(c)


def test_id_lists_are_read_tolerantly(tmp_path):
    f = tmp_path / "testset.txt"
    f.write_bytes(b"airplane/n02691156_10151.jpg\r\n\r\n  n02691156_58  \r\nant/n1.jpg")
    assert read_id_list(f) == ["n02691156_10151", "n02691156_58", "n1"]
    assert photo_id_of_sketch("n02691156_10151-3") == "n02691156_10151"
