.PHONY: setup test bench demo
# The README's commands. Each script also runs without make.
setup:
	scripts/setup.sh
test:
	scripts/test.sh
bench:
	scripts/bench.sh
demo:
	scripts/demo.sh
