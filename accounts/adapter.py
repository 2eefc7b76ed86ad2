"""allauth's hooks for this project: e-mail addresses follow accounts/identity.py on sign-up, login and reset.

(The login form lives here rather than in accounts/forms.py: allauth imports that module for the sign-up form while
its own forms module loads, so importing allauth's forms there would be circular.)"""
from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.forms import LoginForm as AllauthLoginForm

from . import identity


class AccountAdapter(DefaultAccountAdapter):
    def clean_email(self, email: str) -> str:
        """Sign-up and adding an address: the one normal form (allauth has lower-cased it already)."""
        return identity.normalize_email(super().clean_email(email))


class LoginForm(AllauthLoginForm):
    """allauth's login with the address in accounts/identity.py's form (an NFD "é" finds its NFC account)."""

    def clean_login(self):
        return identity.normalize_email(super().clean_login())
