from gsv_pipelines.lib.core.leaks import fingerprint, leak_search


def test_a_value_is_found_and_reported_by_fingerprint_only(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "events.db").write_bytes(b"...token=s3cr3t-value-42;...")
    (tmp_path / "clean.log").write_text("nothing to see")
    found = leak_search(tmp_path, ["s3cr3t-value-42", "other-value"])
    assert found == [f"{tmp_path / 'runs' / 'events.db'}: value {fingerprint('s3cr3t-value-42')}"]
    assert "s3cr3t" not in found[0]
    assert leak_search(tmp_path, ["other-value", ""]) == []
