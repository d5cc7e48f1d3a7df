import lstm_rt


def pytest_report_header(config):
    return f"lstm_rt kernels: {lstm_rt.cpu_isa()}"
