"""Content moderation: how terms match, the staff-edited policy in the admin, and the cached, versioned policy."""
import pytest
from django.core.cache import cache
from django.urls import reverse

from accounts.models import User
from config import process_cache
from generation.models import ModerationCategory, ModerationTerm
from generation.pipeline import moderation
from generation.pipeline.moderation import ModerationVerdict, check_text, compile_policy


@pytest.fixture(autouse=True)
def _fresh_policy():
    """Test transactions roll the policy's rows back but not this process's compiled policy: start and end fresh."""
    moderation.invalidate_policy()
    yield
    moderation.invalidate_policy()


@pytest.fixture
def default_policy(db):
    """The policy as migration 0003 seeds it (transactional tests flush tables, so put it back)."""
    moderation.sync_default_policy()
    moderation.invalidate_policy()


@pytest.fixture
def staff_client(client, db, settings):
    settings.ADMIN_REQUIRE_MFA = False  # the second factor is tested in tests/test_admin_audit.py
    admin = User.objects.create_superuser(email="staff@imagegate.test", password="staff-pass-phrase")
    client.force_login(admin)
    return client


def matcher(*terms: str, kind: str = "word"):
    """check(text) -> the matched term or None, for a one-category policy; no database."""
    policy = compile_policy(categories=[("cat", [(t, kind) for t in terms])])
    return lambda text: policy.check(text).term


def make_category(slug: str, *terms: str, kind: str = "word", enabled: bool = True) -> ModerationCategory:
    category = ModerationCategory.objects.create(slug=slug, name=slug.title(), enabled=enabled)
    for term in terms:
        ModerationTerm.objects.create(category=category, term=term, kind=kind)
    moderation.invalidate_policy()
    return category


# --- Matching (no database) ------------------------------------------------------------------------------------------

def test_match_is_case_insensitive_and_whole_word():
    check = matcher("ass")
    for text in ["ASS", "kick ass!", "an ass.", "Ass-kicking"]:
        assert check(text) == "ass", text
    for text in ["class", "Assassin", "bass guitar", "a passage", "grass", "asses"]:
        assert check(text) is None, text


def test_prefix_kind_matches_words_that_start_with_the_term():
    check = matcher("behead", kind="prefix")
    assert check("Beheading of a statue") == "behead"
    assert check("beheaded") == "behead"
    assert check("unbeheaded") is None


def test_phrase_matches_whatever_the_separators():
    check = matcher("forbidden-test-term")
    for text in ["forbidden test term", "Forbidden   test\n\tterm", "forbidden_test.term", "FORBIDDEN—TEST—TERM",
                 "forbidden\u00a0test term", "(forbidden-test-term)"]:
        assert check(text) == "forbidden-test-term", text
    assert check("forbidden-test-terms") is None
    assert check("unforbidden test term") is None
    assert check("forbidden test") is None


def test_unicode_is_folded_fullwidth_accents_and_invisible_characters():
    check = matcher("forbidden-test-term")
    assert check("ＦＯＲＢＩＤＤＥＮ－ＴＥＳＴ－ＴＥＲＭ") == "forbidden-test-term"  # fullwidth, folded by NFKC
    assert check("fórbíddén-tést-térm") == "forbidden-test-term"
    assert check("forbid\u200bden-test-te\u00adrm") == "forbidden-test-term"  # zero-width space, soft hyphen
    assert matcher("strasse")("STRAßE") == "strasse"  # casefold


def test_trivial_evasions_leetspeak_and_spelled_out_letters():
    check = matcher("nude", "forbidden-test-term")
    assert check("f0rb1dd3n-t3$t-t3rm") == "forbidden-test-term"
    for text in ["n.u.d.e", "N-U-D-E!", "n u d e", "a n_u_d_e photo", "n.ü.d.ë"]:
        assert check(text) == "nude", text
    for text in ["n.u.d.e.s", "nu de", "a serene lake, 1024x1024, 4k"]:
        assert check(text) is None, text


def test_terms_are_literals_not_regular_expressions():
    check = matcher("a+b", "(.*)")  # "(.*)" has no letters: ignored rather than matching everything
    assert check("a b") == "a+b"
    assert check("aab") is None
    assert check("anything at all") is None


def test_verdict_names_the_first_category_and_the_term_as_staff_wrote_it():
    policy = compile_policy(categories=[
        ("gore", [("Mutilated Corpse", "prefix")]),
        ("test", [("Forbidden-Test-Term", "word")]),
    ])
    assert policy.check("mutilated corpses and forbidden test term") == ModerationVerdict(
        flagged=True, category="gore", term="Mutilated Corpse")
    assert policy.check("a forbidden test term") == ModerationVerdict(
        flagged=True, category="test", term="Forbidden-Test-Term")
    assert policy.check("A serene lake at sunset") == ModerationVerdict(flagged=False, category=None, term=None)


def test_longest_term_is_reported():
    assert matcher("kill", "kill yourself")("please kill yourself") == "kill yourself"


# --- The policy in the database --------------------------------------------------------------------------------------

def test_seeded_canary_is_flagged_and_ordinary_prompts_pass(default_policy):
    verdict = check_text("A watercolour of a forbidden-test-term in the rain")
    assert verdict == ModerationVerdict(flagged=True, category="test", term="forbidden-test-term")
    for prompt in ["A serene lake at sunset with mountains in the background", "A lighthouse in a storm",
                   "A classic class photo of an assassin's creed cosplay", "Kill Bill poster, 1024x1024",
                   "A white power strip behind the desk", "Bartolomeu Dias rounds the Cape in 1488"]:
        assert check_text(prompt) == moderation.CLEAR, prompt
    assert check_text("") == moderation.CLEAR


def test_default_policy_has_the_promised_categories(default_policy):
    slugs = set(ModerationCategory.objects.filter(enabled=True).values_list("slug", flat=True))
    assert {"hate", "self-harm", "sexual-minors", "test", "violence-gore"} <= slugs
    for category in ModerationCategory.objects.all():
        assert category.terms.filter(enabled=True).exists(), category.slug
    assert check_text("a beheading").category == "violence-gore"


def test_sync_default_policy_is_idempotent_and_keeps_staff_switches(default_policy):
    assert moderation.sync_default_policy() == 0
    moderation.set_enabled(rows=ModerationCategory.objects.filter(slug="test"), enabled=False)
    assert moderation.sync_default_policy() == 0
    assert not ModerationCategory.objects.get(slug="test").enabled
    assert not check_text("forbidden-test-term").flagged


def test_disabled_category_or_term_does_not_match(db):
    off = make_category("off", "zebra", enabled=False)
    on = make_category("on", "giraffe", "okapi")
    ModerationTerm.objects.filter(category=on, term="okapi").update(enabled=False)
    moderation.invalidate_policy()
    assert check_text("a zebra") == moderation.CLEAR
    assert check_text("an okapi") == moderation.CLEAR
    assert check_text("a giraffe") == ModerationVerdict(flagged=True, category="on", term="giraffe")

    moderation.set_enabled(rows=ModerationCategory.objects.filter(pk=off.pk), enabled=True)
    assert check_text("a zebra").category == "off"


VERSION = process_cache.VERSION_KEY.format("moderation")


def test_policy_is_compiled_once_and_reloaded_when_the_shared_version_changes(db, django_assert_num_queries):
    category = make_category("animals", "zebra")
    with django_assert_num_queries(2):  # categories, then their enabled terms
        assert check_text("a zebra").flagged
    with django_assert_num_queries(0):
        assert check_text("a zebra").flagged
        assert not check_text("a giraffe").flagged

    # bulk_create sends no signal: no invalidation
    ModerationTerm.objects.bulk_create([ModerationTerm(category=category, term="giraffe")])
    assert not check_text("a giraffe").flagged  # still the cached policy

    process_cache._watcher.poll()
    cache.set(VERSION, "bumped-by-another-process", timeout=None)
    process_cache._watcher.poll()  # what every process's watcher thread does every 0.25 s
    assert check_text("a giraffe").flagged


def test_invalidate_bumps_the_version_now_and_again_on_commit(db, django_capture_on_commit_callbacks):
    first = cache.get(VERSION)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        moderation.invalidate_policy()
        second = cache.get(VERSION)
    assert len(callbacks) == 1
    third = cache.get(VERSION)
    assert len({first, second, third}) == 3


def test_a_lost_version_drops_the_cached_policy(db):
    make_category("animals", "zebra")
    assert check_text("a zebra").flagged
    process_cache._watcher.poll()
    ModerationCategory.objects.filter(slug="animals").update(enabled=False)  # no signal
    cache.delete(VERSION)  # Redis lost its data: a missing version is a new version, never "unchanged"
    process_cache._watcher.poll()
    assert not check_text("a zebra").flagged


# --- Staff edit the policy in the admin ------------------------------------------------------------------------------

def category_form(category: ModerationCategory, *, new_terms=(), enabled: bool | None = None, **changes) -> dict:
    """The admin change form of `category` as the browser would post it, with its inline terms."""
    terms = list(category.terms.order_by("id"))
    data = {
        "name": category.name, "slug": category.slug, "description": category.description,
        "terms-TOTAL_FORMS": str(len(terms) + len(new_terms)), "terms-INITIAL_FORMS": str(len(terms)),
        "terms-MIN_NUM_FORMS": "0", "terms-MAX_NUM_FORMS": "1000",
    }
    if category.enabled if enabled is None else enabled:
        data["enabled"] = "on"
    rows = [(t.pk, t.term, t.kind, t.enabled) for t in terms] + [(None, term, kind, True) for term, kind in new_terms]
    for i, (pk, term, kind, term_enabled) in enumerate(rows):
        data |= {f"terms-{i}-id": pk or "", f"terms-{i}-category": category.pk, f"terms-{i}-term": term,
                 f"terms-{i}-kind": kind}
        if term_enabled:
            data[f"terms-{i}-enabled"] = "on"
    data.update(changes)
    return data


def test_admin_lists_and_searches_the_policy(staff_client, default_policy):
    response = staff_client.get(reverse("admin:generation_moderationcategory_changelist"), {"q": "forbidden"})
    assert response.status_code == 200
    assert b"Test canary" in response.content and b"Self-harm" not in response.content
    response = staff_client.get(reverse("admin:generation_moderationterm_changelist"), {"q": "behead"})
    assert response.status_code == 200 and b"behead" in response.content
    assert staff_client.get(reverse("admin:generation_moderationcategory_add")).status_code == 200
    test = ModerationCategory.objects.get(slug="test")
    response = staff_client.get(reverse("admin:generation_moderationcategory_change", args=[test.pk]))
    assert response.status_code == 200 and b"forbidden-test-term" in response.content


def test_staff_edits_in_the_admin_apply_on_the_next_check(staff_client, db, django_capture_on_commit_callbacks):
    category = make_category("animals", "zebra")
    assert not check_text("a giraffe").flagged  # compiled and cached now
    version = cache.get(VERSION)
    url = reverse("admin:generation_moderationcategory_change", args=[category.pk])

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(url, category_form(category, new_terms=[("giraffe", "prefix")]))
    assert response.status_code == 302, response.context["errors"] if response.context else response
    assert cache.get(VERSION) != version  # every process will recompile
    assert check_text("two giraffes") == ModerationVerdict(flagged=True, category="animals", term="giraffe")

    response = staff_client.post(url, category_form(category, enabled=False))
    assert response.status_code == 302
    assert not check_text("a zebra").flagged and not check_text("a giraffe").flagged


def test_staff_add_a_category_with_terms_in_the_admin(staff_client, db):
    response = staff_client.post(reverse("admin:generation_moderationcategory_add"), {
        "name": "Weapons", "slug": "weapons", "description": "", "enabled": "on",
        "terms-TOTAL_FORMS": "1", "terms-INITIAL_FORMS": "0", "terms-MIN_NUM_FORMS": "0", "terms-MAX_NUM_FORMS": "1000",
        "terms-0-term": "pipe bomb", "terms-0-kind": "word", "terms-0-enabled": "on",
    })
    assert response.status_code == 302
    assert check_text("how to build a Pipe-Bomb") == ModerationVerdict(flagged=True, category="weapons",
                                                                     term="pipe bomb")


def test_staff_disable_and_delete_terms_from_the_admin_lists(staff_client, db):
    category = make_category("animals", "zebra", "giraffe")
    zebra = category.terms.get(term="zebra")
    changelist = reverse("admin:generation_moderationterm_changelist")
    assert check_text("a zebra").flagged

    response = staff_client.post(changelist, {"action": "disable_selected", "_selected_action": [zebra.pk]})
    assert response.status_code == 302
    assert not check_text("a zebra").flagged

    response = staff_client.post(changelist, {"action": "enable_selected", "_selected_action": [zebra.pk]})
    assert response.status_code == 302
    assert check_text("a zebra").flagged

    response = staff_client.post(reverse("admin:generation_moderationterm_delete", args=[zebra.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not ModerationTerm.objects.filter(pk=zebra.pk).exists()
    assert not check_text("a zebra").flagged and check_text("a giraffe").flagged

    categories = reverse("admin:generation_moderationcategory_changelist")
    response = staff_client.post(categories, {"action": "delete_selected", "_selected_action": [category.pk],
                                              "post": "yes"})
    assert response.status_code == 302
    assert not check_text("a giraffe").flagged


def test_admin_rejects_a_term_without_letters(staff_client, db):
    category = make_category("animals", "zebra")
    url = reverse("admin:generation_moderationcategory_change", args=[category.pk])
    response = staff_client.post(url, category_form(category, new_terms=[("!!!", "word")]))
    assert response.status_code == 200  # the form again, with the error
    assert b"at least one letter or digit" in response.content
    assert category.terms.count() == 1


@pytest.mark.parametrize("prompt", [
    "f o r b i d d e n - t e s t - t e r m",  # spaced letter by letter
    "f o r b i d d e n t e s t t e r m",
    "forbiddentestterm",  # joined into one word
    "FORBIDDENTESTTERM please",
    "forbidden\u00adtest\u00adterm",  # split by soft hyphens
    "forbid\u00adden-test-term",
    "f\u043erbidden-test-term",  # a Cyrillic o
    "f\u03bfrbidden test term",  # a Greek omicron
    "forbidd\u0435n t\u0435st t\u0435rm",  # Cyrillic e
    # maths bold
    "\U0001d41f\U0001d428\U0001d42b\U0001d41b\U0001d422\U0001d41d\U0001d41d\U0001d41e\U0001d427 test term",
])
def test_spelling_tricks_do_not_dodge_the_policy(default_policy, prompt):
    verdict = check_text(prompt)
    assert verdict.flagged and verdict.category == "test" and verdict.term == "forbidden-test-term"


@pytest.mark.parametrize("prompt", ["a forbidden testing term", "forbidden and tested terms", "the class of 2026",
                                    "Москва на закате", "рор art"])
def test_normalising_does_not_invent_matches(default_policy, prompt):
    assert not check_text(prompt).flagged
