// An empty invocation: the error shows what a model looks like.
kiln::model! {}

fn main() {}
