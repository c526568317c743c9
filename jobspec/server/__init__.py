"""The local tuning service: the Gemini API's tuning surface, served on this machine.

It is a separate process with its own state. jobspec's CLI reaches it only over HTTP, exactly as it
reaches Google, so nothing here imports the reconciler, the job-file loader or the reports.

    app.py        HTTP routes, auth, request logging (Starlette)
    wire.py       the Gemini API's JSON: parsing requests, rendering resources, error envelope
    store.py      SQLite state: tuned models, their operations and snapshots
    trainer.py    LoRA fine-tuning of one job: batches, the training loop
    worker.py     the training worker process: queued jobs, one after another
    adapters.py   tuned adapters on disk
    inference.py  generation on base models and tuned adapters, with an adapter cache
    models.py     base model discovery (the SmolLM2 GGUF), aliases, loading
    main.py       `jobspec serve`: arguments, worker processes, signals
"""
