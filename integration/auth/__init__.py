from .routes import authenticate, bp

__all__ = ["bp", "authenticate"]
