"""The protocol library and the sandbox stand on their own."""

import subprocess
import sys


def _modules_after(imports: str) -> set[str]:
    code = f"import sys\n{imports}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_magento_library_does_not_import_flask_or_the_web_app():
    loaded = _modules_after("import integration.magento.client, integration.magento.export, "
                            "integration.magento.token_exchange, integration.magento.signing")
    assert "flask" not in loaded
    assert not {m for m in loaded if m.startswith("integration.") and not m.startswith("integration.magento")}


def test_the_sandbox_imports_nothing_from_the_app_or_the_client():
    loaded = _modules_after("import integration.sandbox, integration.sandbox.__main__")
    assert not {m for m in loaded if m.startswith("integration.") and not m.startswith("integration.sandbox")}
