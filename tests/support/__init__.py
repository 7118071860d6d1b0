"""What the tests share: fakes of the engine, the run's own services (Redis, the test database), e2e helpers."""
