"""fake_vertex (and its Cloud Storage half, fake_gcs) against plain httpx: every route, the
strictness the Vertex backend relies on, paging, the state machine, cancel, the fault hooks and
auth, so that a failing backend test points at the backend, not at the fake."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import httpx
import pytest

from tests.fake_vertex import FakeVertex

PARENT = "/v1/projects/my-project/locations/us-central1"
JOBS = f"{PARENT}/tuningJobs"
BEARER = {"Authorization": "Bearer ya29.test-token"}
NINE_DIGITS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")
EXAMPLES = [  # §6 lines: 15 + 5 + 1 = 21 and 5 + 5 = 10 characters of text
    {"systemInstruction": {"parts": [{"text": "Answer briefly."}]},
     "contents": [{"role": "user", "parts": [{"text": "1+1=?"}]},
                  {"role": "model", "parts": [{"text": "2"}]}]},
    {"contents": [{"role": "user", "parts": [{"text": "hello"}]},
                  {"role": "model", "parts": [{"text": "world"}]}]},
]
TRAIN = ("\n".join(json.dumps(example) for example in EXAMPLES) + "\n").encode()


@pytest.fixture
def fake():
    with FakeVertex() as running:
        yield running


@pytest.fixture
def client(fake):
    with httpx.Client(base_url=fake.url, headers=BEARER, timeout=10) as http:
        yield http


def upload(client, name="data/train.jsonl", data=TRAIN, bucket="my-bucket", **params):
    return client.post(f"/upload/storage/v1/b/{bucket}/o", content=data,
                       params={"uploadType": "media", "name": name, **params},
                       headers={"Content-Type": "application/jsonl"})


def job_body(**overrides):
    """The §4 create request, with ``overrides`` merged into it."""
    body = {"baseModel": "gemini-2.5-flash", "tunedModelDisplayName": "my-tuned-model",
            "supervisedTuningSpec": {
                "trainingDatasetUri": "gs://my-bucket/data/train.jsonl",
                "hyperParameters": {"epochCount": "3", "learningRateMultiplier": 1.0,
                                    "adapterSize": "ADAPTER_SIZE_FOUR"}},
            "labels": {"managed-by": "jobspec", "owner": "team-a"}}
    body.update(overrides)
    return body


def create(client, **overrides):
    if not client.get("/storage/v1/b/my-bucket/o/data%2Ftrain.jsonl").is_success:
        assert upload(client).status_code == 200
    return client.post(JOBS, json=job_body(**overrides))


def error_of(response, code, status):
    assert response.status_code == code, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (code, status)
    return error["message"]


# Cloud Storage (§7)

def test_upload_then_the_object_exists_with_its_metadata(fake, client):
    encoded = "/storage/v1/b/my-bucket/o/data%2Ftrain.jsonl"
    assert "No such object: my-bucket/data/train.jsonl" in error_of(client.get(encoded), 404,
                                                                   "NOT_FOUND")
    response = upload(client, ifGenerationMatch="0")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["kind"] == "storage#object"
    assert (metadata["name"], metadata["bucket"]) == ("data/train.jsonl", "my-bucket")
    assert metadata["size"] == str(len(TRAIN)) and metadata["generation"].isdigit()
    assert metadata["contentType"] == "application/jsonl" and metadata["md5Hash"]
    assert client.get(encoded).json() == metadata
    assert fake.requests_to("/upload/")[0].query["name"] == ["data/train.jsonl"]
    stored = fake.objects[("my-bucket", "data/train.jsonl")]
    assert (stored.size, stored.content_type, stored.data) == (len(TRAIN), "application/jsonl",
                                                               TRAIN)
    assert stored.lines() == EXAMPLES and fake.uploads[0] is stored
    assert fake.requests_to("/upload/")[0].body == TRAIN


def test_a_streamed_upload_arrives_whole(fake, client):
    chunks = [line + b"\n" for line in TRAIN.splitlines()]
    response = client.post("/upload/storage/v1/b/my-bucket/o", content=iter(chunks),
                           params={"uploadType": "media", "name": "streamed.jsonl"},
                           headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200 and response.json()["size"] == str(len(TRAIN))
    sent = fake.requests_to("/upload/")[0].headers
    assert sent.get("Transfer-Encoding") == "chunked" and "Content-Length" not in sent
    assert fake.objects[("my-bucket", "streamed.jsonl")].data == TRAIN


def test_if_generation_match_zero_refuses_to_overwrite(fake, client):
    first = upload(client, ifGenerationMatch="0").json()
    again = upload(client, data=b"{}\n", ifGenerationMatch="0")
    assert error_of(again, 412, "FAILED_PRECONDITION").startswith("At least one of the pre-")
    assert again.json()["error"]["errors"][0]["reason"] == "conditionNotMet"
    assert fake.objects[("my-bucket", "data/train.jsonl")].data == TRAIN
    matching = upload(client, data=b"{}\n", ifGenerationMatch=first["generation"])
    assert int(matching.json()["generation"]) > int(first["generation"])
    assert len(fake.uploads) == 2


def test_storage_refusals(client):
    assert "bucket does not exist" in error_of(upload(client, bucket="nope"), 404, "NOT_FOUND")
    untyped = client.post("/upload/storage/v1/b/my-bucket/o", content=TRAIN,
                          params={"uploadType": "media", "name": "x.jsonl"})
    assert "Content-Type" in error_of(untyped, 400, "INVALID_ARGUMENT")
    multipart = client.post("/upload/storage/v1/b/my-bucket/o", content=TRAIN,
                            params={"uploadType": "multipart", "name": "x.jsonl"},
                            headers={"Content-Type": "application/jsonl"})
    assert "uploadType=media" in error_of(multipart, 400, "INVALID_ARGUMENT")
    assert "name" in error_of(upload(client, name=""), 400, "INVALID_ARGUMENT")
    upload(client)
    raw_slash = client.get("/storage/v1/b/my-bucket/o/data/train.jsonl")
    assert "%2F" in error_of(raw_slash, 404, "NOT_FOUND")
    assert client.get(f"/storage/v1/b/my-bucket/o/{quote('data/train.jsonl', safe='')}") \
        .status_code == 200


# tuningJobs.create (§2, §3, §4)

def test_create_answers_the_tuning_job_in_pending(fake, client):
    response = create(client)
    assert response.status_code == 200
    job = response.json()
    assert re.fullmatch(r"projects/my-project/locations/us-central1/tuningJobs/\d+", job["name"])
    assert "done" not in job and "metadata" not in job  # a TuningJob, not an Operation
    assert job["state"] == "JOB_STATE_PENDING" and NINE_DIGITS.fullmatch(job["createTime"])
    assert job["baseModel"] == "gemini-2.5-flash"
    assert job["tunedModelDisplayName"] == "my-tuned-model"
    assert job["labels"] == {"managed-by": "jobspec", "owner": "team-a"}
    assert job["supervisedTuningSpec"]["hyperParameters"] == {
        "epochCount": "3", "learningRateMultiplier": 1.0, "adapterSize": "ADAPTER_SIZE_FOUR"}
    assert fake.jobs[job["name"]]["state"] == "JOB_STATE_PENDING"


def test_epoch_count_as_a_number_is_stored_as_a_string(client):
    job = create(client, supervisedTuningSpec={
        "trainingDatasetUri": "gs://my-bucket/data/train.jsonl",
        "validationDatasetUri": "gs://my-bucket/data/train.jsonl",
        "hyperParameters": {"epochCount": 2}}).json()
    assert job["supervisedTuningSpec"]["hyperParameters"] == {"epochCount": "2"}


def test_output_only_fields_in_a_request_are_ignored(client):
    job = create(client, state="JOB_STATE_SUCCEEDED", name="projects/x/locations/y/tuningJobs/1")
    assert job.json()["state"] == "JOB_STATE_PENDING"
    assert job.json()["name"].startswith("projects/my-project/")


def test_an_unknown_field_is_refused_with_googles_words(fake, client):
    spec = {"trainingDatasetUri": "gs://my-bucket/data/train.jsonl",
            "hyperParameters": {"epochCount": "3", "batchSize": "4"}}
    response = create(client, supervisedTuningSpec=spec)
    message = error_of(response, 400, "INVALID_ARGUMENT")
    assert message == ('Invalid JSON payload received. Unknown name "batchSize" at '
                       "'tuning_job.supervised_tuning_spec.hyper_parameters': Cannot find field.")
    violation = response.json()["error"]["details"][0]
    assert violation["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert violation["fieldViolations"] == [{
        "field": "tuning_job.supervised_tuning_spec.hyper_parameters", "description": message}]
    top = error_of(create(client, hyperparameters={}), 400, "INVALID_ARGUMENT")
    assert top == ('Invalid JSON payload received. Unknown name "hyperparameters" at '
                   "'tuning_job': Cannot find field.")
    assert not fake.jobs


@pytest.mark.parametrize(("hyper", "words"), [
    ({"epochCount": "three"},
     "Invalid value at 'tuning_job.supervised_tuning_spec.hyper_parameters.epoch_count' "
     '(TYPE_INT64), "three"'),
    ({"adapterSize": "ADAPTER_SIZE_THREE"},
     "Invalid value at 'tuning_job.supervised_tuning_spec.hyper_parameters.adapter_size' "
     "(type.googleapis.com/google.cloud.aiplatform.v1.SupervisedHyperParameters.AdapterSize), "
     '"ADAPTER_SIZE_THREE"'),
    ({"learningRateMultiplier": "fast"},
     "Invalid value at 'tuning_job.supervised_tuning_spec.hyper_parameters."
     'learning_rate_multiplier\' (TYPE_DOUBLE), "fast"'),
    ({"learningRate": 0.001}, 'Unknown name "learningRate"'),  # v1beta1 only (§3)
])
def test_a_value_of_the_wrong_type_is_refused(client, hyper, words):
    spec = {"trainingDatasetUri": "gs://my-bucket/data/train.jsonl", "hyperParameters": hyper}
    assert words in error_of(create(client, supervisedTuningSpec=spec), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(("overrides", "words"), [
    ({"baseModel": ""}, "baseModel is required"),
    ({"baseModel": "models/gemini-1.0-pro-001"}, "not supported"),
    ({"supervisedTuningSpec": {}}, "trainingDatasetUri is required"),
    ({"supervisedTuningSpec": {"trainingDatasetUri": "gs://my-bucket/missing.jsonl"}},
     "gs://my-bucket/missing.jsonl does not exist"),
    ({"supervisedTuningSpec": {"trainingDatasetUri": "/local/train.jsonl"}},
     "is not gs://BUCKET/OBJECT"),
    ({"supervisedTuningSpec": {"trainingDatasetUri": "gs://my-bucket/data/train.jsonl",
                               "validationDatasetUri": "gs://my-bucket/validation.jsonl"}},
     "validationDatasetUri: the Cloud Storage object gs://my-bucket/validation.jsonl"),
    ({"supervisedTuningSpec": {"trainingDatasetUri": "gs://my-bucket/data/train.jsonl",
                               "hyperParameters": {"adapterSize": "ADAPTER_SIZE_THIRTY_TWO"}}},
     "The adapter size is not supported for this base model."),
    ({"labels": {"Owner": "a"}}, "Invalid label 'Owner'"),
    ({"labels": {"1owner": "a"}}, "keys must start with a lowercase letter"),
    ({"labels": {"owner": "Team A"}}, "Invalid label 'owner': 'Team A'"),
    ({"labels": {"owner": "a" * 65}}, "no longer than 64 characters"),
    ({"labels": {"k" * 65: "a"}}, "no longer than 64 characters"),
    ({"labels": {f"k{n}": "v" for n in range(65)}}, "at most 64 labels"),
    ({"labels": {"owner": 7}}, "Invalid value at 'tuning_job.labels['owner']' (TYPE_STRING), 7"),
    ({"tunedModelDisplayName": "n" * 129}, "at most 128 characters"),
    ({"preTunedModel": {"tunedModelName": "x"}}, "does not model 'tuning_job.pre_tuned_model'"),
])
def test_a_create_the_service_would_refuse(fake, client, overrides, words):
    assert words in error_of(create(client, **overrides), 400, "INVALID_ARGUMENT")
    assert not fake.jobs


def test_labels_and_names_at_their_limits_are_accepted(client):
    labels = {"k" + "x" * 63: "v" * 64, "empty-value": "", **{f"k{n}": "v" for n in range(62)}}
    assert len(labels) == 64
    response = create(client, labels=labels, tunedModelDisplayName="é" * 128)
    assert response.status_code == 200, response.text


def test_a_project_or_location_the_fake_is_not(client):
    other_project = "/v1/projects/other/locations/us-central1/tuningJobs"
    assert "other" in error_of(client.get(other_project), 404, "NOT_FOUND")
    other_location = "/v1/projects/my-project/locations/us-east9/tuningJobs"
    assert error_of(client.post(other_location, json=job_body()), 404,
                    "NOT_FOUND") == "Location us-east9 is not supported."
    assert "v2" in error_of(client.get(JOBS.replace("/v1/", "/v2/")), 404, "NOT_FOUND")


def test_resource_names_use_the_project_number_when_given():
    with FakeVertex(project_number="123456789012") as fake, \
            httpx.Client(base_url=fake.url, headers=BEARER) as client:
        job = create(client).json()
        assert job["name"].startswith("projects/123456789012/locations/us-central1/tuningJobs/")
        by_number = client.get(f"/v1/{job['name']}")
        by_id = client.get(f"{JOBS}/{job['name'].rsplit('/', 1)[1]}")
        assert by_number.json()["name"] == by_id.json()["name"] == job["name"]


# get and the state machine (§5)

def test_a_job_runs_then_succeeds_with_model_endpoint_and_statistics():
    with FakeVertex(polls_until_done=3) as fake, \
            httpx.Client(base_url=fake.url, headers=BEARER) as client:
        name = create(client).json()["name"]
        seen = [client.get(f"/v1/{name}").json() for _ in range(4)]
    assert [job["state"] for job in seen] == ["JOB_STATE_RUNNING", "JOB_STATE_RUNNING",
                                              "JOB_STATE_SUCCEEDED", "JOB_STATE_SUCCEEDED"]
    assert "endTime" not in seen[1] and "tunedModel" not in seen[1]
    done = seen[2]
    assert done == seen[3]
    assert done["createTime"] < done["startTime"] < done["endTime"]
    assert all(NINE_DIGITS.fullmatch(done[key]) for key in ("startTime", "endTime", "updateTime"))
    assert "error" not in done
    model, endpoint = done["tunedModel"]["model"], done["tunedModel"]["endpoint"]
    assert re.fullmatch(r"projects/my-project/locations/us-central1/models/\d+@1", model)
    assert re.fullmatch(r"projects/my-project/locations/us-central1/endpoints/\d+", endpoint)
    assert fake.endpoints == {endpoint: name}
    # 21 and 10 characters; tokens are characters / 4 rounded up, per example: 6 + 3.
    assert done["tuningDataStats"]["supervisedTuningDataStats"] == {
        "tuningDatasetExampleCount": "2", "totalTuningCharacterCount": "31",
        "totalBillableCharacterCount": "31", "totalBillableTokenCount": "9",
        "tuningStepCount": "6"}  # 2 examples x epochCount 3


def test_a_job_that_never_ends():
    with FakeVertex(polls_until_done=None) as fake, \
            httpx.Client(base_url=fake.url, headers=BEARER) as client:
        name = create(client).json()["name"]
        states = {client.get(f"/v1/{name}").json()["state"] for _ in range(5)}
    assert states == {"JOB_STATE_RUNNING"} and fake.progress[name].observations == 5


def test_a_job_can_be_made_to_fail_or_expire(fake, client):
    fake.fail_next_job("Out of capacity.")
    fake.expire_next_job()
    failed, expired, forced = (create(client).json()["name"] for _ in range(3))
    fake.end_job(forced, "JOB_STATE_FAILED", "Forced.")
    for _ in range(2):
        jobs = {name: client.get(f"/v1/{name}").json() for name in (failed, expired)}
    assert jobs[failed]["state"] == "JOB_STATE_FAILED"
    assert jobs[failed]["error"] == {"code": 3, "message": "Out of capacity."}
    assert "tunedModel" not in jobs[failed] and "endTime" in jobs[failed]
    assert jobs[expired]["state"] == "JOB_STATE_EXPIRED" and "error" not in jobs[expired]
    forced_job = client.get(f"/v1/{forced}").json()  # its first observation
    assert forced_job["state"] == "JOB_STATE_FAILED" and forced_job["error"]["message"] == "Forced."
    assert fake.endpoints == {}


def test_training_data_vertex_could_not_read_fails_the_job(client):
    assert upload(client, name="bad.jsonl", data=b'{"contents": []}\n{"text_input": "1"}\n') \
        .status_code == 200
    spec = {"trainingDatasetUri": "gs://my-bucket/bad.jsonl"}
    name = create(client, supervisedTuningSpec=spec).json()["name"]
    for _ in range(2):
        job = client.get(f"/v1/{name}").json()
    assert job["state"] == "JOB_STATE_FAILED" and job["error"]["code"] == 3
    assert "line 2" in job["error"]["message"]


def test_getting_a_job_that_does_not_exist(client):
    assert "does not exist" in error_of(client.get(f"{JOBS}/42"), 404, "NOT_FOUND")


# tuningJobs.list (§2, §3)

def names_of(pages):
    return [job["name"] for page in pages for job in page.get("tuningJobs", [])]


def list_all(client, **params):
    pages, token = [], None
    while True:
        page = client.get(JOBS, params={**params, **({"pageToken": token} if token else {})})
        assert page.status_code == 200, page.text
        pages.append(page.json())
        token = page.json().get("nextPageToken")
        if not token:
            return pages


def test_list_pages_newest_first_and_filters_on_labels(fake, client):
    assert client.get(JOBS).json() == {}  # proto3 JSON leaves out empty fields
    made = [create(client, labels={"owner": owner, "tool": "jobspec"}).json()["name"]
            for owner in ("a", "b", "a", "a", "b")]
    everything = list_all(client)
    assert [len(page["tuningJobs"]) for page in everything] == [2, 2, 1]  # page_size 2
    assert names_of(everything) == made[::-1]
    quoted = list_all(client, filter='labels.owner="a" AND labels.tool="jobspec"')
    assert names_of(quoted) == [made[3], made[2], made[0]]
    unquoted = list_all(client, filter="labels.owner=a AND labels.tool=jobspec")
    assert names_of(unquoted) == names_of(quoted)
    keys_quoted = list_all(client, filter='labels."owner"="a" AND labels."tool"="jobspec"')
    assert names_of(keys_quoted) == names_of(quoted)
    assert names_of([client.get(JOBS, params={"pageSize": 10}).json()]) == made[::-1]
    assert client.get(JOBS, params={"filter": 'labels.owner="nobody"'}).json() == {}


def test_a_page_token_stays_good_while_jobs_are_created(client):
    made = [create(client).json()["name"] for _ in range(3)]
    first = client.get(JOBS).json()
    newer = create(client).json()["name"]
    second = client.get(JOBS, params={"pageToken": first["nextPageToken"]}).json()
    assert names_of([first, second]) == made[::-1] and newer not in names_of([second])
    assert "nextPageToken" not in second


def test_listing_a_job_observes_it(fake, client):
    name = create(client).json()["name"]
    assert client.get(JOBS).json()["tuningJobs"][0]["state"] == "JOB_STATE_RUNNING"
    assert client.get(JOBS).json()["tuningJobs"][0]["state"] == "JOB_STATE_SUCCEEDED"
    assert fake.progress[name].observations == 2


def test_a_key_with_a_dash_is_filtered_on_quoted(client):
    mine = create(client, labels={"jobspec-owner": "team-a"}).json()["name"]
    create(client, labels={"jobspec-owner": "team-b"})
    assert names_of(list_all(client, filter='labels."jobspec-owner"="team-a"')) == [mine]


@pytest.mark.parametrize("text", [
    'labels.owner="a" OR labels.owner="b"', 'labels.owner="a" and labels.tool="x"',
    'labels.owner!="a"', 'state="JOB_STATE_RUNNING"', 'labels.Owner="a"', "labels.owner:a",
    'labels.owner="a" AND', "NOT labels.owner=a",
    # AIP-160: "-" is negation, so a key or value holding one must be quoted.
    'labels.jobspec-owner="a"', "labels.owner=team-a"])
def test_filter_syntax_the_fake_does_not_promise_is_refused(client, text):
    message = error_of(client.get(JOBS, params={"filter": text}), 400, "INVALID_ARGUMENT")
    assert "Unsupported filter" in message


@pytest.mark.parametrize("params", [{"pageToken": "garbage"}, {"pageSize": "many"},
                                    {"pageSize": "-1"}])
def test_bad_paging_parameters(client, params):
    error_of(client.get(JOBS, params=params), 400, "INVALID_ARGUMENT")


def test_foreign_jobs_are_listed_but_not_under_another_owner(fake, client):
    theirs = fake.add_foreign_job(labels={"owner": "team-b"}, display_name="their-model")
    unlabelled = fake.add_foreign_job(state="JOB_STATE_RUNNING")
    cancelled = fake.add_foreign_job(labels={"owner": "team-b"}, state="JOB_STATE_CANCELLED")
    mine = create(client).json()["name"]
    assert set(names_of(list_all(client))) == {theirs["name"], unlabelled["name"],
                                               cancelled["name"], mine}
    assert names_of(list_all(client, filter='labels.owner="team-a"')) == [mine]
    assert theirs["state"] == "JOB_STATE_SUCCEEDED"
    assert fake.endpoints[theirs["tunedModel"]["endpoint"]] == theirs["name"]
    assert "labels" not in unlabelled and unlabelled["startTime"]
    assert cancelled["error"] == {"code": 1, "message": "CANCELED"}


# cancel (§2)

def test_cancel_is_asynchronous_and_ends_cancelled():
    with FakeVertex(polls_until_done=None) as fake, \
            httpx.Client(base_url=fake.url, headers=BEARER) as client:
        name = create(client).json()["name"]
        client.get(f"/v1/{name}")
        answer = client.post(f"/v1/{name}:cancel", json={})
        assert (answer.status_code, answer.json()) == (200, {})
        assert fake.jobs[name]["state"] == "JOB_STATE_CANCELLING"
        assert client.get(f"/v1/{name}").json()["state"] == "JOB_STATE_CANCELLING"
        assert client.post(f"/v1/{name}:cancel", json={}).json() == {}  # still cancelling
        job = client.get(f"/v1/{name}").json()
        assert job["state"] == "JOB_STATE_CANCELLED" and job["endTime"]
        assert job["error"] == {"code": 1, "message": "CANCELED"} and "tunedModel" not in job
        refused = client.post(f"/v1/{name}:cancel", json={})
        assert "JOB_STATE_CANCELLED" in error_of(refused, 400, "FAILED_PRECONDITION")


def test_cancel_refusals(fake, client):
    name = create(client).json()["name"]
    for _ in range(2):
        client.get(f"/v1/{name}")
    finished = client.post(f"/v1/{name}:cancel", json={})
    assert error_of(finished, 400, "FAILED_PRECONDITION") == \
        f"Cannot cancel tuning job {name} in state JOB_STATE_SUCCEEDED."
    assert "does not exist" in error_of(client.post(f"{JOBS}/1:cancel", json={}), 404,
                                        "NOT_FOUND")
    stray = client.post(f"/v1/{name}:cancel", json={"force": True})
    assert error_of(stray, 400, "INVALID_ARGUMENT") == \
        'Invalid JSON payload received. Unknown name "force": Cannot find field.'


# Fault hooks

def test_a_create_whose_answer_is_lost_is_still_carried_out(fake, client):
    upload(client)
    fake.drop_next_create_answer()
    with pytest.raises(httpx.TransportError):
        client.post(JOBS, json=job_body())
    listed = client.get(JOBS, params={"filter": 'labels.owner="team-a"'}).json()["tuningJobs"]
    assert [job["name"] for job in listed] == list(fake.jobs)
    assert create(client).status_code == 200 and len(fake.jobs) == 2


def test_the_next_requests_can_be_made_unavailable(fake, client):
    fake.fail_next_requests(2, 503, retry_after="1")
    for _ in range(2):
        response = upload(client)
        assert "unavailable" in error_of(response, 503, "UNAVAILABLE")
        assert response.headers["Retry-After"] == "1"
    assert not fake.objects
    assert client.post("/token", data={"grant_type": "x"}).status_code == 200  # not counted
    assert upload(client).status_code == 200
    fake.fail_next_requests(1, 429)
    error_of(client.get(JOBS), 429, "RESOURCE_EXHAUSTED")
    assert client.get(JOBS).status_code == 200


# generateContent (§2 "Serving the result")

def generate(client, path, prompt, **extra):
    return client.post(f"{PARENT}/{path}:generateContent",
                       json={"contents": [{"role": "user", "parts": [{"text": prompt}]}], **extra})


def test_a_tuned_endpoint_and_the_base_model_answer_as_scripted(client):
    answers = {("tuned", "1+1=?"): "2", ("base", "1+1=?"): "Two, of course."}
    with FakeVertex(answers=answers) as fake, \
            httpx.Client(base_url=fake.url, headers=BEARER) as client:
        name = create(client).json()["name"]
        assert client.get(f"/v1/{name}").json()["state"] == "JOB_STATE_RUNNING"
        endpoint_id = "9000000000000000002"
        assert "not found" in error_of(generate(client, f"endpoints/{endpoint_id}", "1+1=?"), 404,
                                       "NOT_FOUND")  # nothing is deployed before it succeeds
        endpoint = client.get(f"/v1/{name}").json()["tunedModel"]["endpoint"]
        assert endpoint.endswith(endpoint_id)
        tuned = generate(client, f"endpoints/{endpoint_id}", "1+1=?",
                         generationConfig={"temperature": 0, "maxOutputTokens": 16})
        assert tuned.status_code == 200, tuned.text
        assert tuned.json() == {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "2"}]},
                            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1,
                              "totalTokenCount": 3}}
        base = generate(client, "publishers/google/models/gemini-2.5-flash", "1+1=?")
        assert base.json()["candidates"][0]["content"]["parts"] == [{"text": "Two, of course."}]
        fake.script("tuned", "hello", "world")
        hello = generate(client, f"endpoints/{endpoint_id}", "hello")
        assert hello.json()["candidates"][0]["content"]["parts"][0]["text"] == "world"
        unscripted = generate(client, "publishers/google/models/gemini-2.5-flash", "hello")
        assert "no answer scripted for ('base', 'hello')" in error_of(unscripted, 400,
                                                                      "INVALID_ARGUMENT")
        unknown = generate(client, "publishers/google/models/gemini-9", "1+1=?")
        assert "Publisher Model" in error_of(unknown, 404, "NOT_FOUND")
        assert len(fake.requests_to(f"{PARENT}/endpoints/")) == 3


def test_answers_from_a_callable_and_the_request_checks():
    asked = []

    def answers(kind, target, prompt):
        asked.append((kind, target, prompt))
        return f"{kind}:{prompt}" * 10

    with FakeVertex(answers=answers) as fake, \
            httpx.Client(base_url=fake.url, headers=BEARER) as client:
        model = "publishers/google/models/gemini-2.0-flash-001"
        history = {"contents": [{"role": "user", "parts": [{"text": "first"}]},
                                {"role": "model", "parts": [{"text": "ok"}]},
                                {"parts": [{"text": "sec"}, {"text": "ond"}]}]}
        answer = client.post(f"{PARENT}/{model}:generateContent", json=history).json()
        assert answer["candidates"][0]["content"]["parts"][0]["text"] == "base:second" * 10
        assert asked == [("base", "gemini-2.0-flash-001", "second")]  # the last user turn
        short = generate(client, model, "x", generationConfig={"maxOutputTokens": 2}).json()
        assert short["candidates"][0] == {  # cut to 2 tokens of 4 characters
            "content": {"role": "model", "parts": [{"text": "base:xba"}]},
            "finishReason": "MAX_TOKENS"}
        assert short["usageMetadata"]["candidatesTokenCount"] == 2
        stray = generate(client, model, "x", generationConfig={"max_tokens": 5})
        assert error_of(stray, 400, "INVALID_ARGUMENT") == (
            'Invalid JSON payload received. Unknown name "max_tokens" at '
            "'generation_config': Cannot find field.")
        role = client.post(f"{PARENT}/{model}:generateContent",
                           json={"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]})
        assert error_of(role, 400, "INVALID_ARGUMENT") == "Please use a valid role: user, model."
        empty = client.post(f"{PARENT}/{model}:generateContent", json={"contents": []})
        error_of(empty, 400, "INVALID_ARGUMENT")


# Auth (§1) and the token endpoint

@pytest.mark.parametrize("path", [JOBS, "/storage/v1/b/my-bucket/o/x"])
def test_oauth_only(fake, path):
    with httpx.Client(base_url=fake.url) as anonymous:
        assert "missing required authentication credential" in error_of(
            anonymous.get(path), 401, "UNAUTHENTICATED")
        keyed = anonymous.get(path, headers={"x-goog-api-key": "AIza-key"})
        assert error_of(keyed, 401, "UNAUTHENTICATED").startswith(
            "API keys are not supported by this API.")
        assert keyed.json()["error"]["details"][0]["reason"] == "CREDENTIALS_MISSING"
        in_the_url = anonymous.get(path, params={"key": "AIza-key"}, headers=BEARER)
        assert "API keys are not supported" in error_of(in_the_url, 401, "UNAUTHENTICATED")
        basic = anonymous.get(path, headers={"Authorization": "Basic dXNlcjpwdw=="})
        assert "invalid authentication credentials" in error_of(basic, 401, "UNAUTHENTICATED")
    assert not fake.jobs and not fake.objects


def test_token_endpoint_issues_short_lived_tokens_to_google_auth(fake, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.auth.transport.requests import Request as GoogleRequest
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    credentials = service_account.Credentials.from_service_account_info({
        "type": "service_account", "project_id": "my-project", "private_key_id": "k1",
        "private_key": pem, "client_email": "tuner@my-project.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": f"{fake.url}/token"},
        scopes=["https://www.googleapis.com/auth/cloud-platform"])
    credentials.refresh(GoogleRequest())
    assert credentials.token == "fake-vertex-token-1" and not credentials.valid  # expires at once
    credentials.refresh(GoogleRequest())
    assert credentials.token == "fake-vertex-token-2" and fake.tokens_issued == 2
    grant = fake.requests_to("/token")[0]
    assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in grant.body
    with httpx.Client(base_url=fake.url,
                      headers={"Authorization": f"Bearer {credentials.token}"}) as client:
        assert client.get(JOBS).status_code == 200


# Recording

def test_every_request_is_recorded(fake, client):
    upload(client)
    client.get(JOBS, params={"filter": 'labels.owner="a"', "pageSize": 5})
    client.get("/nowhere")
    assert [(r.method, r.path) for r in fake.requests] == [
        ("POST", "/upload/storage/v1/b/my-bucket/o"), ("GET", JOBS), ("GET", "/nowhere")]
    listing = fake.requests_to(JOBS)[0]
    assert listing.query == {"filter": ['labels.owner="a"'], "pageSize": ["5"]}
    assert listing.headers["Authorization"] == BEARER["Authorization"] and listing.body == b""
    assert "does not serve GET /nowhere" in error_of(client.get("/nowhere"), 404, "NOT_FOUND")
