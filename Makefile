# Entry points; README.md documents them.
.PHONY: demo test bootstrap stack-start stack-stop stack-status bench lock

demo:        ## install what is missing, start everything, send demo traffic, print URLs
	scripts/demo.sh

test:        ## install what is missing and run the whole test suite against the real stack
	scripts/test.sh

bootstrap:   ## install Python deps, jars, apt packages and npm modules (idempotent)
	scripts/bootstrap.sh

stack-start:
	.venv/bin/python -m infra.stack start

stack-stop:
	.venv/bin/python -m infra.stack stop

stack-status:
	.venv/bin/python -m infra.stack status

bench:       ## run the benchmarks and print their figures (see BENCHMARKS.md)
	.venv/bin/python -m bench

lock:        ## re-resolve requirements.lock from pyproject.toml
	uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock
