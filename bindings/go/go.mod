module model_context/bindings/go

go 1.19
