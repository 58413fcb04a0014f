"""``[[queues.producers]]`` and ``[[queues.consumers]]``: what is accepted, and every refusal."""

from __future__ import annotations

import pytest

from edgefn.bundle.manifest import QueueConsumer, QueueProducer, parse_manifest
from edgefn.errors import ManifestError

BASE = 'name = "q"\n'


def test_producers_and_consumers_parse_with_defaults() -> None:
    m = parse_manifest(
        BASE
        + '[[queues.producers]]\nbinding = "JOBS"\nqueue = "jobs"\n'
        + '[[queues.consumers]]\nqueue = "jobs"\nmax_retries = 5\nretry_delay_s = 0.5\n'
        + 'dead_letter_queue = "jobs-dlq"\n',
        path="edgefn.toml",
    )
    assert m.queues.producers == (QueueProducer("JOBS", "jobs"),)
    assert m.queues.consumers == (
        QueueConsumer("jobs", max_retries=5, retry_delay_s=0.5, dead_letter_queue="jobs-dlq"),
    )


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[queues]\nproducer = []\n", "queues.producer", "unknown key"),
        ('[[queues.producers]]\nqueue = "jobs"\n', "queues.producers[0].binding", "missing"),
        ('[[queues.producers]]\nbinding = "JOBS"\n', "queues.producers[0].queue", "missing"),
        (
            '[[queues.producers]]\nbinding = "1X"\nqueue = "jobs"\n',
            "queues.producers[0].binding",
            "identifier",
        ),
        (
            '[[queues.producers]]\nbinding = "J"\nqueue = "Jobs!"\n',
            "queues.producers[0].queue",
            "invalid queue name",
        ),
        (
            '[[queues.producers]]\nbinding = "J"\nqueue = "a"\n[[queues.producers]]\nbinding = "J"\n'
            'queue = "b"\n',
            "queues.producers[1].binding",
            "duplicate",
        ),
        ("[[queues.consumers]]\nmax_retries = 1\n", "queues.consumers[0].queue", "missing"),
        (
            '[[queues.consumers]]\nqueue = "a"\nmax_batch_size = 0\n',
            "queues.consumers[0].max_batch_size",
            "out of range",
        ),
        (
            '[[queues.consumers]]\nqueue = "a"\nmax_batch_size = 101\n',
            "queues.consumers[0].max_batch_size",
            "out of range",
        ),
        (
            '[[queues.consumers]]\nqueue = "a"\nmax_retries = "3"\n',
            "queues.consumers[0].max_retries",
            "expected a number",
        ),
        (
            '[[queues.consumers]]\nqueue = "a"\nmax_concurrency = true\n',
            "queues.consumers[0].max_concurrency",
            "expected a number",
        ),
        (
            '[[queues.consumers]]\nqueue = "a"\nretry_delay_s = -1\n',
            "queues.consumers[0].retry_delay_s",
            "out of range",
        ),
        (
            '[[queues.consumers]]\nqueue = "a"\ndead_letter_queue = "a"\n',
            "queues.consumers[0].dead_letter_queue",
            "its own",
        ),
        (
            '[[queues.consumers]]\nqueue = "a"\n[[queues.consumers]]\nqueue = "a"\n',
            "queues.consumers[1].queue",
            "consumed twice",
        ),
        (
            '[[queues.consumers]]\nqueue = "a"\nmax_retry = 1\n',
            "queues.consumers[0].max_retry",
            "did you mean 'max_retries'",
        ),
        (
            '[vars]\nJOBS = "x"\n[[queues.producers]]\nbinding = "JOBS"\nqueue = "a"\n',
            "queues.producers[0].binding",
            "already",
        ),
        ("[[queues.producers]]\n" * 9 + "", "queues.producers", "at most 8"),
    ],
)
def test_refusals_name_the_key(text: str, key: str, words: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(BASE + text, path="edgefn.toml")
    assert caught.value.key == key
    assert words in str(caught.value)
