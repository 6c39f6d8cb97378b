"""The demo's BBC News corpus and its fixed split."""

from collections import Counter

from ops.corpora import read_bbc_news, split_records


def test_bbc_news_reads_every_article_with_its_topic():
    records = read_bbc_news()
    assert len(records) == 2225 and len({r["id"] for r in records}) == 2225
    assert Counter(r["label"] for r in records) == {"sports": 511, "business": 510, "politics": 417, "tech": 401,
                                                     "entertainment": 386}
    assert all(r["text"].strip() for r in records)


def test_split_is_fixed_and_disjoint():
    records = [{"id": str(i)} for i in range(2225)]
    a, b = split_records(records), split_records(records)
    assert [len(x) for x in a] == [1780, 222, 223]
    assert a == b
    ids = [r["id"] for part in a for r in part]
    assert sorted(ids) == sorted(r["id"] for r in records)
