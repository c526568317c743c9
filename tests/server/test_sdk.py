"""An official SDK (google-genai, unchanged) pointed at the local service's base URL."""

from __future__ import annotations

import time

from google import genai
from google.genai import types

from tests.conftest import NUMBER_EXAMPLES


def test_google_genai_tunes_polls_and_generates(service):
    client = genai.Client(api_key="local", http_options=types.HttpOptions(base_url=service.url))
    job = client.tunings.tune(
        base_model="models/gemini-1.5-flash-001-tuning",
        training_dataset=types.TuningDataset(examples=[
            types.TuningExample(text_input=i, output=o) for i, o in NUMBER_EXAMPLES]),
        config=types.CreateTuningJobConfig(epoch_count=2, batch_size=4, learning_rate=0.001,
                                           tuned_model_display_name="sdk model"))
    assert job.name.startswith("tunedModels/sdk-model-")
    deadline = time.monotonic() + 120
    while True:
        job = client.tunings.get(name=job.name)
        if job.state not in (types.JobState.JOB_STATE_QUEUED, types.JobState.JOB_STATE_RUNNING) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.base_model == "models/gemini-1.5-flash-001-tuning"
    response = client.models.generate_content(
        model=job.name, contents="LXIII",
        config=types.GenerateContentConfig(temperature=0, max_output_tokens=4))
    assert response.candidates[0].finish_reason in (types.FinishReason.STOP,
                                                    types.FinishReason.MAX_TOKENS)
    assert isinstance(response.text or "", str)
    assert response.usage_metadata.total_token_count > 0
    assert "GET /v1beta/tunedModels/sdk-model-" in service.log
