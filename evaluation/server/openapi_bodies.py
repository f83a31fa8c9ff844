"""OpenAPI description of the submission body (the routes read it raw, to cap its size)."""

from .models import Problem

SUBMISSION_JSON_SCHEMA = {
    "type": "object",
    "title": "SubmissionJSON",
    "description": "docs/submission.md: flows [H, W, 2] normalised (u, v) or keypoints [8, 2] pixels per pair "
                   "and direction. May be sent with Content-Encoding: gzip.",
    "required": ["psc6k_submission", "kind", "pairs"],
    "properties": {
        "psc6k_submission": {"type": "integer", "enum": [1]},
        "method": {"type": "string"},
        "kind": {"type": "string", "enum": ["flow", "keypoints"]},
        "pairs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["photo", "sketch", "sketch_to_photo", "photo_to_sketch"],
                "properties": {
                    "photo": {"type": "string"},
                    "sketch": {"type": "string"},
                    "sketch_to_photo": {"type": "array", "items": {"type": "array", "items": {}}},
                    "photo_to_sketch": {"type": "array", "items": {"type": "array", "items": {}}},
                },
            },
        },
    },
}

SUBMISSION_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "A submission: JSON (optionally gzip-encoded), NPZ, or a multipart file field 'file'.",
        "content": {
            "application/json": {"schema": SUBMISSION_JSON_SCHEMA},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                    "description": "an NPZ file (numpy.savez)"}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary",
                                        "description": ".json, .json.gz or .npz submission"}},
            }},
        },
    }
}

PROBLEM_RESPONSES = {
    400: {"model": Problem, "description": "unreadable body (malformed JSON, corrupt gzip or zip, bad multipart)"},
    413: {"model": Problem, "description": "body or its decompressed content over the server's limit"},
    415: {"model": Problem, "description": "unsupported Content-Type or Content-Encoding"},
    422: {"model": Problem, "description": "a valid container whose submission is wrong (schema version, shapes, NaN/Inf, "
                         "missing / extra / duplicate pairs...); detail names the pair and field"},
    503: {"model": Problem, "description": "too many submissions being scored; retry after Retry-After seconds"},
}
