.PHONY: setup test bench demo compat
# The README's commands. Each script also runs without make.
setup:
	scripts/setup.sh
test:
	scripts/test.sh
bench:
	scripts/bench.sh
demo:
	scripts/demo.sh
compat:
	scripts/compat.sh
