module model_context/examples/go

go 1.19

require model_context/bindings/go v0.0.0

replace model_context/bindings/go => ../../bindings/go
