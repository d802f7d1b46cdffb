# Entry points; README.md documents them.
.PHONY: demo test check lint bootstrap stack-start stack-stop stack-status bench lock

demo:        ## install what is missing, start everything, send demo traffic, print URLs
	scripts/demo.sh

test:        ## install what is missing, lint and type-check, then run the whole test suite against the real stack
	scripts/test.sh

check:       ## the fast tier: lint, types and the tests that need no running service
	scripts/check.sh

lint:        ## ruff check, ruff format --check and mypy only
	scripts/lint.sh

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
